//! Cluster backend selection, the one place the kernel names a cluster backend:
//! `[cluster] backend` picks the in-process one (`backends/local`, always built: the
//! embedded default) or Redis (`backends/redis`, Cargo feature `redis`). Each backend owns
//! its config section and returns its services and the Socket.IO server on its adapter
//! (`confab_sdk::live::ClusterParts`); this module holds them side by side. See
//! `docs/cluster.md`.

use std::sync::Arc;

use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::clock::SharedClock;
use confab_sdk::config::{ConfigProblem, RunProfile, Section, backend_problems};
use confab_sdk::live::{ClusterParts, LiveCounters};
use confab_sdk::storage::SharedStateStore;
use serde::{Deserialize, Serialize};
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, SocketIoBuilder};

use crate::server::socket::SocketHost;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `local` (one node, in-process) or `redis`.
    pub backend: String,
    #[cfg(feature = "redis")]
    pub redis: confab_redis::RedisConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backend: "local".into(),
            #[cfg(feature = "redis")]
            redis: Default::default(),
        }
    }
}

/// The backends this build can start.
const BACKENDS: &[&str] = &[
    "local",
    #[cfg(feature = "redis")]
    "redis",
];

impl Section for ClusterConfig {
    fn validate(&self, profile: &RunProfile) -> Vec<ConfigProblem> {
        #[cfg(feature = "redis")]
        let sections = vec![("redis", self.redis.validate(profile))];
        #[cfg(not(feature = "redis"))]
        let sections: Vec<(&str, Vec<ConfigProblem>)> = {
            let _ = profile;
            Vec::new()
        };
        backend_problems(&self.backend, BACKENDS, sections)
    }
}

/// The Socket.IO server, on the adapter the backend chose.
pub enum ClusterIo {
    Local(SocketIo),
    #[cfg(feature = "redis")]
    Redis(SocketIo<confab_redis::SioAdapter>),
}

/// The Socket.IO tower layer that goes with [`ClusterIo`].
pub enum SocketLayer {
    Local(SocketIoLayer),
    #[cfg(feature = "redis")]
    Redis(SocketIoLayer<confab_redis::SioAdapter>),
}

impl SocketLayer {
    /// The `/socket.io/` route on this layer.
    pub fn route(self) -> salvo::Router {
        match self {
            SocketLayer::Local(l) => crate::server::socket_io_route(l),
            #[cfg(feature = "redis")]
            SocketLayer::Redis(l) => crate::server::socket_io_route(l),
        }
    }
}

impl ClusterIo {
    /// Installs the `/` namespace; with Redis, waits until the adapter has subscribed.
    pub async fn install(&self, host: Arc<SocketHost>) -> Result<(), String> {
        match self {
            ClusterIo::Local(io) => {
                crate::server::socket::install(io, host);
                Ok(())
            }
            #[cfg(feature = "redis")]
            ClusterIo::Redis(io) => crate::server::socket::install(io, host)
                .await
                .map_err(|e| format!("cluster.redis: the socket.io adapter could not subscribe: {e}")),
        }
    }

    /// Ends every socket of this node whose credential no longer stands (see
    /// [`crate::server::lifecycle::recheck`]).
    pub async fn recheck(&self, auth: &SharedAuthenticator) {
        match self {
            ClusterIo::Local(io) => crate::server::lifecycle::recheck(io, auth).await,
            #[cfg(feature = "redis")]
            ClusterIo::Redis(io) => crate::server::lifecycle::recheck(io, auth).await,
        }
    }

    /// After an outage of the backend: closes every socket of this node, whose clients
    /// reconnect and sync the cross-node events this node could not hear meanwhile.
    pub fn resync(&self, counters: &LiveCounters) {
        match self {
            // One node hears every event: there is nothing it could have missed.
            ClusterIo::Local(_) => {
                let _ = counters;
            }
            #[cfg(feature = "redis")]
            ClusterIo::Redis(io) => {
                let closed = confab_sdk::live::resync_local(io, counters, None);
                tracing::info!(
                    closed,
                    "fan-out is back: closed this node's sockets so that their clients sync"
                );
            }
        }
    }

    /// Closes every socket of this node.
    pub async fn close(&self) {
        match self {
            ClusterIo::Local(io) => io.close().await,
            #[cfg(feature = "redis")]
            ClusterIo::Redis(io) => io.close().await,
        }
    }
}

/// The cluster services of one node, and its Socket.IO server.
pub type Cluster = ClusterParts<ClusterIo, SocketLayer>;

/// Starts the configured backend (`local_only` forces the in-process one, for building
/// the API document without a Redis) and the Socket.IO server on its adapter. The
/// in-process backend keeps sessions, revocations and refresh families in `state`.
pub async fn start(
    config: &ClusterConfig,
    local_only: bool,
    builder: SocketIoBuilder,
    clock: SharedClock,
    counters: Arc<LiveCounters>,
    state: SharedStateStore,
) -> Result<Cluster, String> {
    #[cfg(feature = "redis")]
    if config.backend == "redis" && !local_only {
        let parts = confab_redis::start(&config.redis, builder, clock, counters).await?;
        return Ok(parts.map(ClusterIo::Redis, SocketLayer::Redis));
    }
    let _ = (config, local_only);
    let parts = confab_local::start(builder, clock, counters, state).await?;
    Ok(parts.map(ClusterIo::Local, SocketLayer::Local))
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use confab_sdk::config::{RunProfile, parse_section};
    use serde_json::json;

    use super::ClusterConfig;

    fn parse(v: serde_json::Value) -> Result<ClusterConfig, Vec<String>> {
        let profile = RunProfile {
            name: "development".into(),
        };
        parse_section::<ClusterConfig>("cluster", &v, &profile).map_err(|p| p.iter().map(|p| p.key.clone()).collect())
    }

    #[test]
    fn the_redis_backend_is_configurable_and_checked_by_key() {
        let c = parse(json!({"backend": "redis", "redis": {"url": "redis://10.0.0.5:6380/2", "key_prefix": "chat:"}}))
            .unwrap();
        assert_eq!((c.backend.as_str(), c.redis.heartbeat_ttl_secs), ("redis", 30));
        assert!(c.redis.revocations_fail_open);
        let bad = parse(json!({"backend": "etcd", "redis": {
            "url": "http://x", "key_prefix": "has space", "heartbeat_ttl_secs": 0,
            "command_timeout_ms": 1, "connect_timeout_ms": 0, "ttl": 3,
        }}))
        .unwrap_err();
        assert_eq!(
            bad,
            [
                "cluster.redis.ttl",
                "cluster.backend",
                "cluster.redis.url",
                "cluster.redis.key_prefix",
                "cluster.redis.heartbeat_ttl_secs",
                "cluster.redis.command_timeout_ms",
                "cluster.redis.connect_timeout_ms",
            ]
        );
    }
}
