//! A socket lives as long as its credential. A revocation ends the sockets of one user
//! that its credential opened, on every node (`Emitter::end_credential`: each node looks
//! through that user's room at each socket's principal), and a timer ends a socket when
//! its token expires (the JWT's `exp` plus the leeway) unless `refresh_token` rebound it
//! to a newer token first.
//!
//! Ending a socket sends `session_ended {code, message}`, then disconnects it. A socket
//! whose buffer is full cannot take the disconnect (socketioxide refuses it); its
//! WebSocket connection is then closed under it (`confab_sdk::live::end`).

use std::sync::{Arc, Mutex};

use confab_sdk::auth::{Principal, SharedAuthenticator, ended};
use confab_sdk::deadlines::{Deadline, Deadlines};
use confab_sdk::live::{end, principal_of};
use futures_util::StreamExt;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

/// The credential of one socket, in its extensions.
#[derive(Default)]
pub struct Credential {
    principal: Mutex<Option<Arc<Principal>>>,
    expiry: Mutex<Option<Deadline>>,
}

impl Credential {
    pub fn current(&self) -> Option<Arc<Principal>> {
        self.principal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Binds the socket to `principal`, whose credential's revocation ends it from now
    /// on, and sets its expiry (one of the node's `deadlines`, not a task per socket).
    pub fn bind<A: Adapter>(&self, s: &SocketRef<A>, principal: Principal, deadlines: &Deadlines) {
        let expires_at = principal.expires_at();
        let bound = Arc::new(principal);
        self.principal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(bound.clone());
        let timer = expires_at.map(|at| {
            let s = s.clone();
            deadlines.schedule(at.saturating_mul(1000), move || {
                // Unless `refresh_token` rebound the socket as this came due.
                if principal_of(&s).is_none_or(|p| Arc::ptr_eq(&p, &bound)) {
                    end(
                        &s,
                        ended::TOKEN_EXPIRED,
                        "token expired: refresh it (refresh_token) before it expires, or reconnect with a new one",
                    )
                }
            })
        });
        let previous = std::mem::replace(&mut *self.expiry.lock().unwrap_or_else(|e| e.into_inner()), timer);
        if let Some(previous) = previous {
            deadlines.cancel(previous);
        }
    }

    /// The socket is gone: its expiry goes too (it holds a reference to the socket).
    pub fn release(&self, deadlines: &Deadlines) {
        if let Some(timer) = self.expiry.lock().unwrap_or_else(|e| e.into_inner()).take() {
            deadlines.cancel(timer);
        }
    }
}

/// How many sockets' credentials are checked at once after an outage.
const RECHECKS_AT_ONCE: usize = 32;

/// Asks `auth` about the credential of every socket of this node and ends those whose
/// credential ended meanwhile: while this node was cut off from the cluster backend, the
/// revocations other nodes published never reached it.
pub async fn recheck<A: Adapter>(io: &SocketIo<A>, auth: &SharedAuthenticator) {
    let sockets = io.sockets();
    let checked = sockets.len();
    let ended = std::sync::atomic::AtomicUsize::new(0);
    futures_util::stream::iter(sockets)
        .for_each_concurrent(RECHECKS_AT_ONCE, |s| {
            let ended = &ended;
            async move {
                let Some(principal) = principal_of(&s) else {
                    return;
                };
                match auth.recheck(&principal).await {
                    // Unless `refresh_token` rebound the socket meanwhile.
                    Ok(Some(code)) if principal_of(&s).is_some_and(|p| Arc::ptr_eq(&p, &principal)) => {
                        ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        end(
                            &s,
                            code,
                            "your credential ended while this server was cut off from the cluster",
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(socket = %s.id, error = %e.message, "could not re-check a socket's credential")
                    }
                }
            }
        })
        .await;
    let ended = ended.into_inner();
    tracing::info!(
        checked,
        ended,
        "re-checked the sockets' credentials after a cluster outage"
    );
}
