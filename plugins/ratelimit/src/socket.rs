//! The socket side: an event guard that checks the rules of the event for the socket's
//! user. A refused event gets `rate_limited` with `retryAfterMs` (in its ack or an `error`
//! event) and the socket stays; a socket refused `disconnect_factor` times the rule's
//! burst in a row is disconnected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use confab_sdk::futures_util::FutureExt;
use confab_sdk::realtime::{EventGuard, SocketCtx, SocketHook};

use crate::limiter::{Limit, Limiter};

/// Refusals in a row, per socket id. `len` mirrors the map's size so that the common case
/// (no socket refused) costs an atomic load instead of a lock and the socket id's String.
#[derive(Default)]
pub(crate) struct Strikes {
    map: Mutex<HashMap<String, u64>>,
    len: AtomicUsize,
}

impl Strikes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clear(&self, ctx: &SocketCtx) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map();
        map.remove(&ctx.socket.id());
        self.len.store(map.len(), Ordering::Relaxed);
    }
}

pub(crate) fn guard(limiter: Arc<Limiter>) -> EventGuard {
    Arc::new(move |ctx: &SocketCtx, event: &str| {
        let idxs = limiter.events.get(event)?;
        // Unauthenticated sockets exist only without the auth plugin: nobody to count.
        let user = ctx.principal.as_ref()?.user_id().to_owned();
        let (limiter, idxs, ctx) = (limiter.clone(), idxs.clone(), ctx.clone());
        Some(
            async move {
                let decisions = limiter.check(&idxs, &user).await.unwrap_or_default();
                if let Some((idx, d)) = Limiter::first_refusal(&idxs, &decisions) {
                    strike(&limiter, idx, &ctx);
                    return Err(limiter.refused(idx, &d));
                }
                limiter.strikes.clear(&ctx);
                Ok(())
            }
            .boxed(),
        )
    })
}

/// Counts a refusal; past the threshold, disconnects the socket once the refusal has been
/// answered (the kernel sends it right after the guard returns).
fn strike(limiter: &Arc<Limiter>, idx: usize, ctx: &SocketCtx) {
    if limiter.disconnect_factor == 0 {
        return;
    }
    let burst = match limiter.rules[idx].limit {
        Limit::Rate(r) => u64::from(r.burst),
        Limit::PerDay(n) => n,
    };
    let threshold = burst.saturating_mul(u64::from(limiter.disconnect_factor));
    let id = ctx.socket.id();
    let mut map = limiter.strikes.map();
    let n = map.entry(id.clone()).or_default();
    *n += 1;
    let over = *n >= threshold;
    if over {
        map.remove(&id);
    }
    limiter.strikes.len.store(map.len(), Ordering::Relaxed);
    drop(map);
    if !over {
        return;
    }
    let socket = ctx.socket.clone();
    let reason = format!("rate limit `{}` exceeded repeatedly", limiter.rules[idx].name);
    confab_sdk::tokio::spawn(async move {
        confab_sdk::tokio::task::yield_now().await;
        socket.emit("error", &limiter_disconnect_notice(&reason));
        socket.disconnect(&reason);
    });
}

fn limiter_disconnect_notice(reason: &str) -> confab_sdk::serde_json::Value {
    confab_sdk::serde_json::json!({"message": format!("disconnected: {reason}"), "code": "rate_limited"})
}

pub(crate) fn forget(limiter: Arc<Limiter>) -> SocketHook {
    Arc::new(move |ctx: SocketCtx| {
        limiter.strikes.clear(&ctx);
        async {}.boxed()
    })
}
