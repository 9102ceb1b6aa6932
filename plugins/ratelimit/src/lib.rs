//! The ratelimit plugin: per-IP, per-user and per-username limits (GCRA: a rate and a
//! burst) and daily quotas, for REST routes (a hoop) and socket events (an event guard).
//! Counters live in the cluster's `RateLimitStore`, so every node shares them on Redis.
//! See `docs/ratelimit.md`.

mod config;
mod http;
mod limiter;
mod openapi;
mod socket;

use std::sync::Arc;

use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::clock::SharedClock;
use confab_sdk::ratelimit::SharedRateLimitStore;
use confab_sdk::serde_json::{Map, Value};
use confab_sdk::{BuildError, Plugin, Registrar};

pub use config::{QuotaConfig, RateLimitConfig, RuleConfig};

pub struct RateLimitPlugin;

impl Plugin for RateLimitPlugin {
    type Config = RateLimitConfig;
    const NAME: &'static str = "ratelimit";

    fn build(&self, config: RateLimitConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let store: SharedRateLimitStore = reg.require()?;
        let clock: SharedClock = reg.require()?;
        let limiter = Arc::new(limiter::Limiter::new(&config, store, clock).map_err(BuildError)?);
        reg.provide(limiter.clone())?;
        let fragment = limiter.openapi();
        let limits = match fragment.extensions.as_ref().and_then(|e| e.get(limiter::RATE_LIMITS)) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        reg.openapi(fragment);
        reg.document_pass(move |doc| openapi::add_rate_limited(doc, &limits));
        for header in http::HEADERS {
            reg.expose_header(header);
        }
        if limiter.has_routes() {
            reg.hoop(http::Hoop(limiter.clone()));
        }
        if limiter.has_events() {
            reg.event_guard(socket::guard(limiter.clone()));
            reg.on_disconnect(socket::forget(limiter));
        }
        Ok(())
    }

    fn finish(&self, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        // Optional: without the auth plugin, per-user REST rules have nobody to count.
        if let Some(auth) = reg.service::<SharedAuthenticator>() {
            let limiter: Arc<limiter::Limiter> = reg.require()?;
            let _ = limiter.auth.set(auth);
        }
        Ok(())
    }
}
