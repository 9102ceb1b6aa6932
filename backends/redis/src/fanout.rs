//! Socket.IO fan-out across nodes: a `socketioxide-redis` driver on a reconnecting
//! connection, and the emitter plugins use.
//!
//! The driver shipped with `socketioxide-redis` holds a plain multiplexed connection: once
//! Redis restarts, it is dead for good and so are its subscriptions. This one uses a
//! `ConnectionManager` with automatic resubscription, so fan-out resumes by itself. On a
//! Redis Cluster it uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`): a channel lives on the
//! node of its slot, so `PUBSUB SHARDNUMSUB` counts every subscriber (plain `NUMSUB`
//! counts one node's) and a publish is not broadcast to every node of the cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use confab_sdk::async_trait;
use confab_sdk::auth::{CredentialId, ended};
use confab_sdk::realtime::{Emitter, user_room};
use redis::{AsyncCommands, PushInfo, PushKind, RedisResult, Value as RedisValue};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide_core::adapter::errors::BroadcastError;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

use crate::config::RedisConfig;
use crate::conn::RedisConn;
use crate::health::RedisHealth;
use crate::relay::StreamRelay;
use confab_sdk::live::LiveCounters;
use confab_sdk::live::StreamGate;

/// The Socket.IO adapter of the Redis backend.
pub type SioAdapter = socketioxide_redis::CustomRedisAdapter<socketioxide::adapter::Emitter, BusDriver>;

type Handlers = Arc<RwLock<HashMap<String, Handler>>>;

/// Where one subscribed channel's messages go.
struct Handler {
    tx: mpsc::Sender<ChanItem>,
    /// Set when a message for this channel was dropped (its buffer was full).
    lost: Option<Arc<AtomicBool>>,
}

/// A pub/sub driver for the adapter on a reconnecting RESP3 connection.
#[derive(Clone)]
pub struct BusDriver {
    conn: RedisConn,
    handlers: Handlers,
    timeout: Duration,
}

/// A failed or timed-out pub/sub command.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Hands a pub/sub message to the stream of its channel. Never blocks the connection: a
/// full stream drops the message (buffers are large) and says so where the channel asked.
/// A closed connection is noted: what was published until it is back never arrives, so
/// the next successful ping counts as a recovery even if no command failed meanwhile.
fn deliver(handlers: &Handlers, health: &RedisHealth, msg: PushInfo) {
    if matches!(msg.kind, PushKind::Disconnection) {
        health.dropped();
        return;
    }
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return;
    }
    let mut data = msg.data.into_iter();
    let (Some(RedisValue::BulkString(chan)), Some(RedisValue::BulkString(payload))) = (data.next(), data.next()) else {
        return;
    };
    let Ok(chan) = String::from_utf8(chan) else { return };
    let handlers = handlers.read().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = handlers.get(&chan)
        && h.tx.try_send((chan, payload)).is_err()
    {
        match &h.lost {
            Some(lost) => lost.store(true, Ordering::Release),
            None => tracing::warn!("socket.io fan-out: incoming buffer full, a cross-node emit was dropped"),
        }
    }
}

impl BusDriver {
    pub(crate) async fn connect(
        config: &RedisConfig,
        timeout: Duration,
        health: Arc<RedisHealth>,
    ) -> RedisResult<Self> {
        let handlers: Handlers = Arc::default();
        let sink = handlers.clone();
        let conn = RedisConn::connect(
            config,
            Some(Box::new(move |msg: PushInfo| deliver(&sink, &health, msg))),
        )
        .await?;
        Ok(BusDriver {
            conn,
            handlers,
            timeout,
        })
    }

    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Subscribes `chan` with a buffer of `size` messages; `lost` is set when one was
    /// dropped because the buffer was full.
    pub(crate) async fn subscribe_lossy(
        &self,
        chan: String,
        size: usize,
        lost: Arc<AtomicBool>,
    ) -> Result<mpsc::Receiver<ChanItem>, BusError> {
        let (tx, rx) = mpsc::channel(size);
        self.listen(chan, Handler { tx, lost: Some(lost) }).await?;
        Ok(rx)
    }

    /// Registers the handler first (Redis may deliver as soon as it confirms), then
    /// subscribes.
    async fn listen(&self, chan: String, handler: Handler) -> Result<(), BusError> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chan.clone(), handler);
        let conn = self.conn.clone();
        let name = chan.clone();
        let subscribed = self.bounded(async move {
            match conn {
                RedisConn::Single(mut c) => c.subscribe(name).await,
                RedisConn::Cluster(mut c) => c.ssubscribe(name).await,
            }
        });
        if let Err(e) = subscribed.await {
            self.handlers.write().unwrap_or_else(|e| e.into_inner()).remove(&chan);
            return Err(e);
        }
        Ok(())
    }

    /// `PUBLISH` (`SPUBLISH` on a cluster), within the command timeout.
    pub(crate) async fn publish_slice(&self, chan: &str, val: &[u8]) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        if conn.is_cluster() {
            self.bounded(conn.spublish::<_, _, RedisValue>(chan, val)).await?;
        } else {
            self.bounded(conn.publish::<_, _, RedisValue>(chan, val)).await?;
        }
        Ok(())
    }

    async fn bounded<T>(&self, f: impl Future<Output = RedisResult<T>>) -> Result<T, BusError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(BusError::Timeout(self.timeout)),
        }
    }
}

impl Driver for BusDriver {
    type Error = BusError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), BusError> {
        self.publish_slice(&chan, &val).await
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, BusError> {
        let (tx, rx) = mpsc::channel(size);
        self.listen(chan, Handler { tx, lost: None }).await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), BusError> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).remove(&chan);
        let conn = self.conn.clone();
        self.bounded(async move {
            match conn {
                RedisConn::Single(mut c) => c.unsubscribe(chan).await,
                RedisConn::Cluster(mut c) => c.sunsubscribe(chan).await,
            }
        })
        .await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, BusError> {
        let mut conn = self.conn.clone();
        let kind = if conn.is_cluster() { "SHARDNUMSUB" } else { "NUMSUB" };
        let cmd = redis::cmd("PUBSUB").arg(kind).arg(chan).to_owned();
        // A map of channel -> subscribers; on a cluster, the sum over the nodes asked.
        let counts: HashMap<String, u16> = self.bounded(async move { cmd.query_async(&mut conn).await }).await?;
        Ok(counts.get(chan).copied().unwrap_or(0))
    }
}

/// Emits through the Redis adapter to every node, stream events through the relay. When
/// Redis cannot carry an emit (it is down, or the publish failed or timed out), the emit
/// still reaches this node's sockets.
pub struct RedisEmitter {
    pub io: SocketIo<SioAdapter>,
    pub counters: Arc<LiveCounters>,
    pub health: Arc<RedisHealth>,
    pub gate: Arc<StreamGate>,
    pub relay: Arc<StreamRelay>,
}

#[async_trait]
impl Emitter for RedisEmitter {
    async fn to_user(&self, user_id: &str, event: &str, data: &Value) {
        self.to_room(&user_room(user_id), event, data).await;
    }

    async fn to_room(&self, room: &str, event: &str, data: &Value) {
        if self.health.is_up() {
            // The adapter publishes first and emits locally after: an adapter error means
            // nothing was emitted here yet, so the local fallback cannot deliver twice.
            match self.io.to(room.to_owned()).emit(event, data).await {
                Ok(()) => return,
                Err(BroadcastError::Adapter(e)) => self.health.trouble(&e),
                // Local sockets that could not take it (closed, buffer full): nothing to redo.
                Err(e) => {
                    tracing::debug!(room, event, error = %e, "emit failed");
                    return;
                }
            }
        }
        if let Err(e) = self.io.local().to(room.to_owned()).emit(event, data).await {
            tracing::debug!(room, event, error = %e, "local emit failed");
        }
    }

    async fn stream_to_user(&self, user_id: &str, pos: u64, event: &str, data: &Value) {
        self.gate.admit(user_id, pos, event, data);
        self.relay.publish(user_id, pos, event, data);
    }

    /// This node's sockets are ended directly, the other nodes' through the relay (each
    /// node looks through the user's room: see `CredentialId`).
    async fn end_credential(&self, user_id: &str, credential: &CredentialId, code: &str, message: &str) {
        confab_sdk::live::end_credential_local(&self.io, user_id, credential, code, message);
        self.relay.publish_end(user_id, credential, code, message).await;
        // Nodes of an older Confab, in a rolling upgrade, keep their sockets in a room per
        // credential instead and cannot read the relay's `end`: through the adapter, as
        // those versions did. Can go once no cluster runs them.
        if self.health.is_up() {
            let room = credential.legacy_room();
            let data = serde_json::json!({"code": code, "message": message});
            if let Err(e) = self.io.to(room.clone()).emit(ended::EVENT, &data).await {
                tracing::warn!(room, error = %e, "session_ended did not reach the older nodes");
            }
            if let Err(e) = self.io.to(room.clone()).disconnect().await {
                tracing::warn!(room, error = %e, "sockets of an ended credential on older nodes were not disconnected");
            }
        }
    }

    fn local_sockets(&self) -> usize {
        self.counters.open_sockets().max(0) as usize
    }
}
