//! The Redis cluster backend: sessions, revoked tokens and presence shared by every node,
//! and Socket.IO fan-out through the `socketioxide-redis` adapter.
//!
//! Two connections, both `ConnectionManager`s that reconnect by themselves: `data` for the
//! stores, `bus` for the adapter's pub/sub (it resubscribes after a reconnect). Every
//! command is bounded by `command_timeout_ms`. While Redis is down, commands fail at once
//! (`Busy`, a 503) instead of each waiting for a timeout, a monitor pings every second to
//! notice its return (which also drives the reconnects), and the node keeps serving what
//! it can: local deliveries, storage, token checks (see `revocations_fail_open`).
//! Key layout: `docs/cluster.md`.

mod config;
mod conn;
mod fanout;
mod health;
mod presence;
mod ratelimit;
mod refresh;
mod relay;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab_sdk::storage::{StorageError, StorageResult};
use redis::RedisResult;

use confab_sdk::clock::SharedClock;
use confab_sdk::live::{AdapterParts, ClusterParts, LiveCounters, StreamGate};
use socketioxide::SocketIoBuilder;
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};

pub use config::RedisConfig;
pub use conn::RedisConn;
pub use fanout::{BusDriver, RedisEmitter, SioAdapter};
pub use health::{RedisCheck, RedisHealth};
pub use presence::RedisPresenceStore;
pub use ratelimit::RedisRateLimitStore;
pub use refresh::RedisRefreshStore;
pub use relay::StreamRelay;
pub use sessions::{RedisRevocationStore, RedisSessionStore};

/// How often the monitor pings Redis.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Connects to Redis, registers this node and builds the Socket.IO server on the Redis
/// adapter.
pub async fn start(
    cfg: &RedisConfig,
    builder: SocketIoBuilder,
    clock: SharedClock,
    counters: Arc<LiveCounters>,
) -> Result<AdapterParts<SioAdapter>, String> {
    let cluster = RedisCluster::connect(cfg).await?;
    let adapter = RedisAdapterConfig::new()
        .with_prefix(cluster.channel_prefix())
        .with_request_timeout(Duration::from_millis(cfg.command_timeout_ms))
        // Cross-node emits queue here while the adapter hands them to local sockets.
        .with_stream_buffer(16 * 1024);
    let (layer, io) = builder
        .with_adapter::<SioAdapter>(RedisAdapterCtr::new_with_driver(cluster.bus(), adapter))
        .build_layer();
    let ttl = Duration::from_secs(cfg.heartbeat_ttl_secs);
    let presence = RedisPresenceStore::start(cluster.clone(), clock.clone(), ttl)
        .await
        .map_err(|e| format!("cluster.redis: cannot register this node: {e}"))?;
    let gate = StreamGate::local(io.clone(), counters.clone());
    let relay = StreamRelay::start(
        cluster.bus(),
        &cluster.key(""),
        cluster.health(),
        io.clone(),
        gate.clone(),
        counters.clone(),
    )
    .await?;
    tracing::info!(key_prefix = %cfg.key_prefix, heartbeat_ttl_secs = cfg.heartbeat_ttl_secs, "cluster ready (redis)");
    Ok(ClusterParts {
        sessions: Arc::new(RedisSessionStore::new(cluster.clone())),
        refresh: Arc::new(RedisRefreshStore::new(cluster.clone())),
        revocations: Arc::new(RedisRevocationStore::new(
            cluster.clone(),
            clock,
            cfg.revocations_fail_open,
        )),
        presence: Arc::new(presence),
        ratelimit: Arc::new(RedisRateLimitStore::new(cluster.clone())),
        emitter: Arc::new(RedisEmitter {
            io: io.clone(),
            counters,
            health: cluster.health(),
            gate,
            relay,
        }),
        io,
        layer,
        health: Some(Arc::new(RedisCheck(cluster.health()))),
        recoveries: Some(cluster.health().recoveries()),
    })
}

/// Connections to Redis and what every store shares.
pub struct RedisCluster {
    data: RedisConn,
    bus: BusDriver,
    health: Arc<RedisHealth>,
    prefix: String,
    timeout: Duration,
}

impl RedisCluster {
    /// Connects both connections; fails when Redis does not answer within the connect timeout.
    pub async fn connect(config: &RedisConfig) -> Result<Arc<Self>, String> {
        let key = if config.cluster_urls.is_empty() {
            "cluster.redis.url"
        } else {
            "cluster.redis.cluster_urls"
        };
        let fail = |e: &dyn std::fmt::Display| format!("{key}: cannot connect to redis: {e}");
        let within = Duration::from_millis(config.connect_timeout_ms.saturating_mul(3));
        let timeout = Duration::from_millis(config.command_timeout_ms);
        let health = Arc::<RedisHealth>::default();
        let connect = async {
            let data = RedisConn::connect(config, None).await?;
            let bus = BusDriver::connect(config, timeout, health.clone()).await?;
            RedisResult::Ok((data, bus))
        };
        let (data, bus) = tokio::time::timeout(within, connect)
            .await
            .map_err(|_| fail(&format!("no answer within {} ms", within.as_millis())))?
            .map_err(|e| fail(&e))?;
        let cluster = Arc::new(RedisCluster {
            data,
            bus,
            health,
            prefix: config.key_prefix.clone(),
            timeout,
        });
        tokio::spawn(monitor(Arc::downgrade(&cluster)));
        Ok(cluster)
    }

    pub fn health(&self) -> Arc<RedisHealth> {
        self.health.clone()
    }

    pub fn bus(&self) -> BusDriver {
        self.bus.clone()
    }

    /// The adapter's channels live under the key prefix too, so clusters sharing a Redis
    /// (pub/sub ignores database numbers) do not hear each other.
    pub fn channel_prefix(&self) -> String {
        format!("{}sio", self.prefix)
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    pub(crate) fn conn(&self) -> RedisConn {
        self.data.clone()
    }

    /// Runs one command (or script) with the timeout, reporting the outcome to the health
    /// state. Fails at once while Redis is known to be down.
    pub(crate) async fn run<T>(&self, command: impl Future<Output = RedisResult<T>>) -> StorageResult<T> {
        if !self.health.is_up() {
            return Err(StorageError::Busy);
        }
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(v)) => {
                self.health.answered();
                Ok(v)
            }
            Ok(Err(e)) => Err(health::storage_error(&self.health, e)),
            // Busy, not an outage: the monitor's pings judge that (RedisHealth::trouble).
            Err(_) => Err(StorageError::Busy),
        }
    }

    /// Pings both connections, reporting the outcome to the health state: no answer in
    /// time counts like a slow command, an error as an outage. A failed ping also starts
    /// the connections' reconnection.
    async fn probe(&self) {
        let ping = |mut c: RedisConn| async move { redis::cmd("PING").query_async::<String>(&mut c).await };
        let both = async { tokio::try_join!(ping(self.data.clone()), ping(self.bus.conn())) };
        match tokio::time::timeout(self.timeout, both).await {
            Ok(Ok(_)) => self.health.recovered(),
            // The connection's own response timeout fires with ours.
            Ok(Err(e)) if health::is_timeout(&e) => self.health.timed_out(&e),
            Ok(Err(e)) => self.health.failed(&e),
            Err(_) => self
                .health
                .timed_out(&format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

async fn monitor(cluster: std::sync::Weak<RedisCluster>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        c.probe().await;
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Redis for tests: the one on 127.0.0.1:6379 and, when `CONFAB_TEST_REDIS_CLUSTER`
    //! lists seed nodes (tests/run.sh starts a three-master cluster), a Redis Cluster. Each
    //! test works under a key prefix of its own, deleted afterwards (never FLUSHDB: other
    //! tests share them).

    use std::io::Write;

    use super::*;

    pub const URL: &str = "redis://127.0.0.1:6379";
    pub const CLUSTER_VAR: &str = "CONFAB_TEST_REDIS_CLUSTER";

    fn with_prefix(ttl_secs: u64) -> RedisConfig {
        RedisConfig {
            url: URL.into(),
            key_prefix: format!("confab-test:{}:", confab_sdk::ids::random_token()),
            heartbeat_ttl_secs: ttl_secs,
            ..RedisConfig::default()
        }
    }

    /// The single Redis, then the cluster when one is given (else a `skipped:` line on
    /// stderr, which the test harness does not capture).
    pub fn configs(ttl_secs: u64) -> Vec<RedisConfig> {
        let mut all = vec![with_prefix(ttl_secs)];
        match std::env::var(CLUSTER_VAR) {
            Ok(urls) if !urls.is_empty() => all.push(RedisConfig {
                cluster_urls: urls.split(',').map(str::to_owned).collect(),
                ..with_prefix(ttl_secs)
            }),
            _ => {
                let _ = writeln!(std::io::stderr(), "skipped: redis cluster mode: set {CLUSTER_VAR}");
            }
        }
        all
    }

    pub async fn cluster(config: &RedisConfig) -> Arc<RedisCluster> {
        RedisCluster::connect(config)
            .await
            .expect("redis on 127.0.0.1:6379 or the cluster (tests/run.sh starts them)")
    }

    /// Deletes every key under the prefix (on every master of a cluster).
    pub async fn delete_prefix(cluster: &RedisCluster) {
        let mut conn = cluster.conn();
        let pattern = format!("{}*", cluster.prefix);
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await.unwrap();
        }
    }
}
