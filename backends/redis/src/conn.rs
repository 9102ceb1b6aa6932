//! One connection type for a single Redis and a Redis Cluster, so the stores' commands and
//! scripts run unchanged on both: a `ConnectionManager` (reconnects by itself) or a
//! cluster connection (follows slot moves, reconnects and resubscribes by itself).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, RedisResult, Value};

use crate::config::RedisConfig;

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where pub/sub pushes go; `None` for a connection without subscriptions.
pub(crate) type Pushes = Option<Box<dyn Fn(redis::PushInfo) + Send + Sync>>;

/// A client that speaks RESP3, whatever the URL says: the adapter's pub/sub needs it.
fn client(url: &str) -> RedisResult<Client> {
    let info = url.into_connection_info()?;
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// Requests a connection takes before its callers queue for room. redis-rs's default (50)
/// starved the monitor's pings under a burst: with thousands of limiter checks waiting,
/// each refill of the queue needed another pass of the scheduler over every waiting task,
/// a ping waited behind them for over a second three times in a row, and the node
/// declared Redis down while Redis sat idle (BENCHMARKS.md, "Two nodes on Redis").
const PIPELINE_BUFFER: usize = 4096;

/// Reconnects quickly and a few times per attempt; the monitor starts a new attempt every
/// second while Redis stays away, so a long outage is noticed when it ends.
fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(config.command_timeout_ms)))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_pipeline_buffer_size(PIPELINE_BUFFER)
}

impl RedisConn {
    /// Connects to `cluster_urls` when the config lists any (cluster mode), else to `url`.
    pub(crate) async fn connect(config: &RedisConfig, pushes: Pushes) -> RedisResult<Self> {
        if config.cluster_urls.is_empty() {
            let mut manager = manager_config(config);
            if let Some(sink) = pushes {
                manager = manager
                    .set_push_sender(move |msg| {
                        sink(msg);
                        Ok::<(), std::convert::Infallible>(())
                    })
                    .set_automatic_resubscription();
            }
            let conn = ConnectionManager::new_with_config(client(&config.url)?, manager).await?;
            return Ok(RedisConn::Single(conn));
        }
        let nodes: Vec<_> = config
            .cluster_urls
            .iter()
            .map(|u| u.as_str().into_connection_info())
            .collect::<RedisResult<_>>()?;
        let client = ClusterClient::builder(nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .response_timeout(Duration::from_millis(config.command_timeout_ms))
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()?;
        let mut cluster = ClusterConfig::new();
        if let Some(sink) = pushes {
            cluster = cluster.set_push_sender(move |msg| {
                sink(msg);
                Ok::<(), std::convert::Infallible>(())
            });
        }
        Ok(RedisConn::Cluster(
            client.get_async_connection_with_config(cluster).await?,
        ))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}
