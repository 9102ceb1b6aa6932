//! Rate-limit counters in process memory, for one node (`confab_contract::cluster::
//! ratelimit_store`). The arithmetic is `confab_sdk::ratelimit::gcra`.

use std::collections::HashMap;
use std::sync::Mutex;

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::ratelimit::{Check, Decision, Limit, Rate, RateLimitStore, gcra, quota_decision};
use confab_sdk::storage::StorageResult;

/// Below this many entries in a shard, growth alone never triggers a sweep.
const MIN_SWEEP_LEN: usize = 1024;

#[derive(Default)]
struct Counters {
    /// key -> theoretical arrival time (µs, clock time).
    tats: HashMap<String, u64>,
    /// key -> (window, count).
    quotas: HashMap<String, (i64, u64)>,
    sweep_at_len: usize,
    quota_sweep_at_len: usize,
}

/// Shards of the in-process counters: every socket event of a limited kind takes one
/// lock, so they are spread over several.
const SHARDS: usize = 16;

/// Counters in process memory, for a single node. Entries whose bucket is full again
/// (TAT in the past) carry no information and are swept when a shard's map has doubled.
pub struct LocalRateLimitStore {
    clock: SharedClock,
    shards: Vec<Mutex<Counters>>,
}

impl LocalRateLimitStore {
    pub fn new(clock: SharedClock) -> Self {
        let shard = || {
            Mutex::new(Counters {
                sweep_at_len: MIN_SWEEP_LEN,
                quota_sweep_at_len: MIN_SWEEP_LEN,
                ..Counters::default()
            })
        };
        LocalRateLimitStore {
            clock,
            shards: (0..SHARDS).map(|_| shard()).collect(),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Counters> {
        // FNV-1a: cheap, and keys are ours (rule name and an id), not an attacker's choice
        // of collisions that matter: a shard only bounds contention.
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        // Every update is a single insert: a poisoned lock is safe to reuse.
        self.shards[(h % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let c = s.lock().unwrap_or_else(|e| e.into_inner());
                c.tats.len() + c.quotas.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimitStore for LocalRateLimitStore {
    async fn check(&self, who: &str, checks: &[Check<'_>]) -> StorageResult<Vec<Decision>> {
        let mut decisions = Vec::with_capacity(checks.len());
        for check in checks {
            let key = format!("{}:{who}", check.rule);
            let d = match check.limit {
                Limit::Rate(rate) => self.rate(&key, rate),
                Limit::Quota {
                    window,
                    limit,
                    reset_after_ms,
                } => self.quota(&key, window, limit, reset_after_ms),
            };
            decisions.push(d);
            if !d.allowed {
                break;
            }
        }
        Ok(decisions)
    }
}

impl LocalRateLimitStore {
    fn rate(&self, key: &str, rate: Rate) -> Decision {
        let now_us = u64::try_from(self.clock.now_millis()).unwrap_or(0).saturating_mul(1000);
        let mut c = self.shard(key);
        if c.tats.len() >= c.sweep_at_len {
            c.tats.retain(|_, tat| *tat > now_us);
            c.sweep_at_len = (c.tats.len() * 2).max(MIN_SWEEP_LEN);
        }
        let (decision, tat) = gcra(now_us, c.tats.get(key).copied(), rate);
        if let Some(tat) = tat {
            match c.tats.get_mut(key) {
                Some(t) => *t = tat,
                None => {
                    c.tats.insert(key.to_owned(), tat);
                }
            }
        }
        decision
    }

    fn quota(&self, key: &str, window: i64, limit: u64, reset_after_ms: u64) -> Decision {
        let mut c = self.shard(key);
        if c.quotas.len() >= c.quota_sweep_at_len {
            // Old windows are over: their counts are never read again.
            c.quotas.retain(|_, (w, _)| *w >= window);
            c.quota_sweep_at_len = (c.quotas.len() * 2).max(MIN_SWEEP_LEN);
        }
        if !c.quotas.contains_key(key) {
            c.quotas.insert(key.to_owned(), (window, 0));
        }
        let Some(entry) = c.quotas.get_mut(key) else {
            return quota_decision(true, 0, limit, reset_after_ms);
        };
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit {
            return quota_decision(false, entry.1, limit, reset_after_ms);
        }
        entry.1 += 1;
        quota_decision(true, entry.1, limit, reset_after_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confab_sdk::clock::OffsetClock;
    use confab_sdk::futures_util::FutureExt;

    use super::*;
    use confab_contract::cluster as contract;

    #[tokio::test]
    async fn local_store_passes_the_contract() {
        let c = Arc::new(OffsetClock::new(0));
        let store = LocalRateLimitStore::new(c.clone());
        let advance: contract::Advance = Arc::new(move |ms| {
            c.advance(ms as i64);
            async {}.boxed()
        });
        contract::ratelimit_store(&store, None, advance).await;
    }

    /// The cost of one in-process check (what a limited socket event pays per rule):
    /// `cargo test --release -p confab-local --lib check_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn check_cost() {
        use std::time::Instant;
        let store = LocalRateLimitStore::new(Arc::new(confab_sdk::clock::SystemClock));
        let rate = Rate::parse("100000/s", 1_000_000).unwrap();
        let users: Vec<String> = (0..100).map(|i| format!("send:{i:024x}")).collect();
        let n = 1_000_000;
        let started = Instant::now();
        for i in 0..n {
            assert!(store.rate(&users[i % users.len()], rate).allowed);
        }
        let rate_ns = started.elapsed().as_nanos() / n as u128;
        let started = Instant::now();
        for i in 0..n {
            assert!(store.quota(&users[i % users.len()], 1, u64::MAX, 1000).allowed);
        }
        let quota_ns = started.elapsed().as_nanos() / n as u128;
        println!("local store: {rate_ns} ns per rate check, {quota_ns} ns per quota check");
    }

    #[tokio::test]
    async fn full_buckets_are_swept_on_growth() {
        let c = Arc::new(OffsetClock::new(0));
        let store = LocalRateLimitStore::new(c.clone());
        let rate = Rate::parse("10/s", 1).unwrap();
        for round in 0..5 {
            for n in 0..MIN_SWEEP_LEN * SHARDS {
                store.rate(&format!("r{round}k{n}"), rate);
            }
            c.advance(1_000);
            assert!(
                store.len() <= 3 * MIN_SWEEP_LEN * SHARDS,
                "round {round}: {}",
                store.len()
            );
        }
    }
}
