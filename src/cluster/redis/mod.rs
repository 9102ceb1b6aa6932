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

mod fanout;
mod health;
mod presence;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab_sdk::storage::{StorageError, StorageResult};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, RedisResult};

use crate::config::kernel::RedisConfig;

pub use fanout::{BusDriver, RedisEmitter, SioAdapter};
pub use health::{RedisCheck, RedisHealth};
pub use presence::RedisPresenceStore;
pub use sessions::{RedisRevocationStore, RedisSessionStore};

/// How often the monitor pings Redis.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Connections to Redis and what every store shares.
pub struct RedisCluster {
    data: ConnectionManager,
    bus: BusDriver,
    health: Arc<RedisHealth>,
    prefix: String,
    timeout: Duration,
}

/// A client that speaks RESP3, whatever the URL says: the adapter's pub/sub needs it.
fn client(url: &str) -> RedisResult<Client> {
    let info = url.into_connection_info()?;
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// Reconnects quickly and a few times per attempt; the monitor starts a new attempt every
/// second while Redis stays away, so a long outage is noticed when it ends.
pub(crate) fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(config.command_timeout_ms)))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

impl RedisCluster {
    /// Connects both connections; fails when Redis does not answer within the connect timeout.
    pub async fn connect(config: &RedisConfig) -> Result<Arc<Self>, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cluster.redis.url: cannot connect to redis: {e}");
        let client = client(&config.url).map_err(|e| fail(&e))?;
        let within = Duration::from_millis(config.connect_timeout_ms.saturating_mul(3));
        let timeout = Duration::from_millis(config.command_timeout_ms);
        let connect = async {
            let data = ConnectionManager::new_with_config(client.clone(), manager_config(config)).await?;
            let bus = BusDriver::connect(client, config, timeout).await?;
            RedisResult::Ok((data, bus))
        };
        let (data, bus) = tokio::time::timeout(within, connect)
            .await
            .map_err(|_| fail(&format!("no answer within {} ms", within.as_millis())))?
            .map_err(|e| fail(&e))?;
        let cluster = Arc::new(RedisCluster {
            data,
            bus,
            health: Arc::default(),
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

    pub(crate) fn conn(&self) -> ConnectionManager {
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
            Err(_) => {
                self.health
                    .timed_out(&format!("no answer within {} ms", self.timeout.as_millis()));
                Err(StorageError::Busy)
            }
        }
    }

    /// Pings both connections, reporting the outcome to the health state: no answer in
    /// time counts like a slow command, an error as an outage. A failed ping also starts
    /// the connections' reconnection.
    async fn probe(&self) {
        let ping = |mut c: ConnectionManager| async move { redis::cmd("PING").query_async::<String>(&mut c).await };
        let both = async { tokio::try_join!(ping(self.data.clone()), ping(self.bus.conn())) };
        match tokio::time::timeout(self.timeout, both).await {
            Ok(Ok(_)) => self.health.recovered(),
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
    //! A Redis for tests: the one on 127.0.0.1:6379, under a key prefix of its own that
    //! is deleted afterwards (never FLUSHDB: other tests share it).

    use super::*;

    pub const URL: &str = "redis://127.0.0.1:6379";

    pub fn config(ttl_secs: u64) -> RedisConfig {
        RedisConfig {
            url: URL.into(),
            key_prefix: format!("confab-test:{}:", confab_sdk::ids::random_token()),
            heartbeat_ttl_secs: ttl_secs,
            ..RedisConfig::default()
        }
    }

    pub async fn cluster(config: &RedisConfig) -> Arc<RedisCluster> {
        RedisCluster::connect(config)
            .await
            .expect("redis on 127.0.0.1:6379 (tests/run.sh starts one)")
    }

    /// Deletes every key under the prefix.
    pub async fn delete_prefix(cluster: &RedisCluster) {
        let mut conn = cluster.conn();
        let pattern = format!("{}*", cluster.prefix);
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await.unwrap();
        }
    }
}
