//! The compiled rules and quotas, and one check of one of them against the store.

use std::collections::HashMap;
use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::clock::SharedClock;
use confab_sdk::error::ErrorCode;
use confab_sdk::ratelimit::{self, Check, Decision, Rate, SharedRateLimitStore};
use confab_sdk::serde_json::{Map, Value, json};
use confab_sdk::utoipa::openapi::OpenApi;
use confab_sdk::utoipa::openapi::extensions::Extensions;

use crate::config::{KeyKind, RateLimitConfig, Target};

/// The OpenAPI extension listing the limits.
pub(crate) const RATE_LIMITS: &str = "x-rate-limits";

const DAY_MS: i64 = 86_400_000;

pub(crate) enum Limit {
    Rate(Rate),
    PerDay(u64),
}

pub(crate) struct Rule {
    pub name: String,
    pub key: KeyKind,
    pub limit: Limit,
    /// What the OpenAPI extension shows.
    doc: Value,
}

pub(crate) struct Limiter {
    pub rules: Vec<Rule>,
    /// (method, path as salvo reports it, rule indexes).
    pub routes: Vec<(String, String, Vec<usize>)>,
    /// Shared slices: the socket guard clones one per event.
    pub events: HashMap<String, Arc<[usize]>>,
    pub store: SharedRateLimitStore,
    /// The auth plugin's, when it is enabled: set by the plugin's `finish`.
    pub auth: std::sync::OnceLock<SharedAuthenticator>,
    pub disconnect_factor: u32,
    pub strikes: crate::socket::Strikes,
    clock: SharedClock,
    clock_offset_ms: i64,
}

impl Limiter {
    pub fn new(config: &RateLimitConfig, store: SharedRateLimitStore, clock: SharedClock) -> Result<Limiter, String> {
        let mut events: HashMap<String, Vec<usize>> = HashMap::new();
        let mut limiter = Limiter {
            rules: Vec::new(),
            routes: Vec::new(),
            events: HashMap::new(),
            store,
            auth: Default::default(),
            disconnect_factor: config.disconnect_factor,
            strikes: Default::default(),
            clock,
            clock_offset_ms: config.clock_offset_secs.saturating_mul(1000),
        };
        let rates = config.rules.iter().map(|r| {
            let rate = Rate::parse(&r.rate, r.burst).map_err(|e| format!("ratelimit.rules {}: {e}", r.name))?;
            let doc = json!({"name": r.name, "key": r.key, "rate": r.rate, "burst": r.burst});
            Ok::<_, String>((&r.name, &r.key, &r.targets, Limit::Rate(rate), doc))
        });
        let quotas = config.quotas.iter().map(|q| {
            let doc = json!({"name": q.name, "key": q.key, "perDay": q.per_day});
            Ok((&q.name, &q.key, &q.targets, Limit::PerDay(q.per_day), doc))
        });
        for item in rates.chain(quotas) {
            let (name, key, targets, limit, doc) = item?;
            let idx = limiter.rules.len();
            for t in targets {
                match Target::parse(t)? {
                    Target::Event(e) => events.entry(e).or_default().push(idx),
                    Target::Route { method, path } => {
                        match limiter.routes.iter_mut().find(|(m, p, _)| *m == method && *p == path) {
                            Some((_, _, idxs)) => idxs.push(idx),
                            None => limiter.routes.push((method, path, vec![idx])),
                        }
                    }
                }
            }
            limiter.rules.push(Rule {
                name: name.clone(),
                key: KeyKind::parse(key)?,
                limit,
                doc,
            });
        }
        limiter.events = events.into_iter().map(|(e, idxs)| (e, idxs.into())).collect();
        Ok(limiter)
    }

    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The rules of a matched route (`path` as salvo reports it: no leading `/`).
    pub fn for_route(&self, method: &str, path: &str) -> Option<&[usize]> {
        self.routes
            .iter()
            .find(|(m, p, _)| m == method && p == path)
            .map(|(_, _, idxs)| idxs.as_slice())
    }

    /// One request of `who` against rules `idxs`, in order, in one store call: the
    /// decisions up to the first refusal. A store that cannot answer (Redis down) admits:
    /// limits protect the service, they must not take it down with Redis.
    pub async fn check(&self, idxs: &[usize], who: &str) -> Option<Vec<Decision>> {
        let now = self.clock.now_millis().saturating_add(self.clock_offset_ms);
        let day = now.div_euclid(DAY_MS);
        let checks: Vec<Check<'_>> = idxs
            .iter()
            .map(|&idx| {
                let rule = &self.rules[idx];
                let limit = match rule.limit {
                    Limit::Rate(rate) => ratelimit::Limit::Rate(rate),
                    Limit::PerDay(limit) => ratelimit::Limit::Quota {
                        window: day,
                        limit,
                        reset_after_ms: ((day + 1) * DAY_MS - now) as u64,
                    },
                };
                Check {
                    rule: &rule.name,
                    limit,
                }
            })
            .collect();
        match self.store.check(who, &checks).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!(error = %e, "rate limit not checked: store unavailable");
                None
            }
        }
    }

    /// The refused rule of a [`Limiter::check`] answer, with its decision.
    pub fn first_refusal(idxs: &[usize], decisions: &[Decision]) -> Option<(usize, Decision)> {
        idxs.iter()
            .zip(decisions)
            .find(|(_, d)| !d.allowed)
            .map(|(i, d)| (*i, *d))
    }

    /// The error for a refused request.
    pub fn refused(&self, idx: usize, d: &Decision) -> ApiError {
        let rule = &self.rules[idx];
        let what = match rule.limit {
            Limit::Rate(_) => "rate limit",
            Limit::PerDay(_) => "daily quota",
        };
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "{what} `{}` exceeded: retry in {} ms",
                rule.name,
                d.retry_after_ms.max(1)
            ),
        );
        e.retry_after_ms = Some(d.retry_after_ms.max(1));
        e
    }

    /// An `x-rate-limits` extension (`"POST /path"` or `"event:name"` → the limits); the
    /// plugin's document pass adds a 429 response to every operation it names.
    pub fn openapi(&self) -> OpenApi {
        let mut by_target = Map::new();
        for (method, path, idxs) in &self.routes {
            let docs = idxs.iter().map(|i| self.rules[*i].doc.clone()).collect();
            by_target.insert(format!("{method} /{path}"), Value::Array(docs));
        }
        let mut events: Vec<_> = self.events.iter().collect();
        events.sort_by_key(|(e, _)| e.as_str());
        for (event, idxs) in events {
            let docs = idxs.iter().map(|i| self.rules[*i].doc.clone()).collect();
            by_target.insert(format!("event:{event}"), Value::Array(docs));
        }
        let mut doc = OpenApi::default();
        doc.extensions = Some(Extensions::from_iter([(RATE_LIMITS, Value::Object(by_target))]));
        doc
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confab_sdk::clock::SystemClock;

    use super::*;

    struct NoStore;

    #[confab_sdk::async_trait]
    impl confab_sdk::ratelimit::RateLimitStore for NoStore {
        async fn check(&self, _: &str, _: &[Check<'_>]) -> confab_sdk::storage::StorageResult<Vec<Decision>> {
            Err(confab_sdk::storage::StorageError::Busy)
        }
    }

    fn limiter() -> Limiter {
        Limiter::new(&RateLimitConfig::default(), Arc::new(NoStore), Arc::new(SystemClock)).unwrap()
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_admits() {
        let l = limiter();
        assert!(l.check(&[0, 1], "x").await.is_none());
        assert!(l.for_route("POST", "chats/{userId}/send").is_some());
        assert!(l.for_route("GET", "chats/{userId}/send").is_none());
        let doc = serde_json::to_value(l.openapi()).unwrap();
        assert_eq!(doc["x-rate-limits"]["event:typing"][0]["burst"], 20);
    }
}
