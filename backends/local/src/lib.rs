//! The in-process cluster backend (`[cluster] backend = "local"`, the default): one node
//! is the whole cluster. Sessions, revoked tokens and refresh families live in memory and
//! are written through to the storage's state records, so a restart forgets no logout;
//! presence and rate-limit counters live in memory only; fan-out is socketioxide's
//! in-process adapter. See `docs/cluster.md`.

mod persist;
mod ratelimit;
mod refresh;
mod stores;

use std::sync::Arc;

use confab_sdk::clock::SharedClock;
use confab_sdk::live::{AdapterEmitter, AdapterParts, ClusterParts, LiveCounters};
use confab_sdk::storage::{SharedStateStore, StorageError};
use socketioxide::SocketIoBuilder;
use socketioxide::adapter::LocalAdapter;

pub use ratelimit::LocalRateLimitStore;
pub use refresh::LocalRefreshStore;
pub use stores::{LocalPresenceStore, LocalRevocationStore, LocalSessionStore};

/// Restores what `state` keeps and builds the Socket.IO server on the in-process adapter.
pub async fn start(
    builder: SocketIoBuilder,
    clock: SharedClock,
    counters: Arc<LiveCounters>,
    state: SharedStateStore,
) -> Result<AdapterParts<LocalAdapter>, String> {
    let restore_failed = |e: StorageError| format!("storage: cannot restore the sessions and revocations: {e}");
    let sessions = LocalSessionStore::restore(clock.clone(), state.clone()).await;
    let revocations = LocalRevocationStore::restore(clock.clone(), state.clone()).await;
    let refresh = LocalRefreshStore::restore(clock.clone(), state).await;
    let (layer, io) = builder.build_layer();
    Ok(ClusterParts {
        sessions: Arc::new(sessions.map_err(restore_failed)?),
        revocations: Arc::new(revocations.map_err(restore_failed)?),
        refresh: Arc::new(refresh.map_err(restore_failed)?),
        presence: Arc::new(LocalPresenceStore::new(clock.clone())),
        ratelimit: Arc::new(LocalRateLimitStore::new(clock)),
        emitter: Arc::new(AdapterEmitter::new(io.clone(), counters)),
        io,
        layer,
        health: None,
        recoveries: None,
    })
}
