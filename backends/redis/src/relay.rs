//! Stream events across nodes: a node emits a message to its own sockets through its
//! [`StreamGate`] and publishes it once on a channel of the user's; every other node hands
//! it to its gate, which orders it among that user's events and closes a socket that
//! cannot take it (DESIGN §5: no silent drops). socketioxide-redis would drop an emit for
//! a full socket on a remote node unseen, so stream events do not go through it.
//!
//! What fan-out could not carry is made up by the clients' sync: when Redis is back after
//! an outage, the node names the users whose events it could not publish (every node
//! closes their sockets), and the kernel closes its own sockets (they may have missed
//! other nodes' events meanwhile; see `app.rs`). A relay buffer that overflowed does the
//! same for this node's sockets.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide_redis::drivers::Driver;
use tokio::sync::mpsc;

use crate::fanout::{BusDriver, SioAdapter};
use crate::health::RedisHealth;
use confab_sdk::live::LiveCounters;
use confab_sdk::live::{StreamGate, resync_local};

/// Channels the users are spread over (each its own slot on a Redis Cluster).
const CHANNELS: usize = 16;

/// Relayed events a channel queues before it drops one (and resyncs).
const BUFFER: usize = 64 * 1024;

/// Past this many users to name, a resync names everyone.
const MAX_NAMED: usize = 10_000;

/// How often a dropped relayed event is looked for.
const LOSS_CHECK: Duration = Duration::from_millis(200);

/// Node ids are this long (`random_token`); every payload starts with its sender's.
const NODE_ID_LEN: usize = 32;

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    /// A stream event for `user`'s sockets.
    Event {
        user: String,
        pos: u64,
        event: String,
        data: Value,
    },
    /// Close these users' sockets (all when `users` is absent): events for them were lost.
    Resync { users: Option<Vec<String>> },
}

#[derive(Serialize)]
#[serde(tag = "t", rename = "event")]
struct OutEvent<'a> {
    user: &'a str,
    pos: u64,
    event: &'a str,
    data: &'a Value,
}

/// Users whose events this node could not publish since Redis was last back.
#[derive(Default)]
struct Unrelayed {
    users: HashSet<String>,
    everyone: bool,
}

pub struct StreamRelay {
    bus: BusDriver,
    channels: Vec<String>,
    node: String,
    health: Arc<RedisHealth>,
    unrelayed: Mutex<Unrelayed>,
    /// `unrelayed` holds someone (read without the lock on every publish).
    pending: AtomicBool,
}

impl StreamRelay {
    /// Subscribes this node to every stream channel and starts handing what arrives to
    /// `gate`.
    pub async fn start(
        bus: BusDriver,
        prefix: &str,
        health: Arc<RedisHealth>,
        io: SocketIo<SioAdapter>,
        gate: Arc<StreamGate>,
        metrics: Arc<LiveCounters>,
    ) -> Result<Arc<Self>, String> {
        let relay = Arc::new(StreamRelay {
            bus,
            channels: (0..CHANNELS).map(|n| format!("{prefix}stream#{{{n}}}")).collect(),
            node: confab_sdk::ids::random_token(),
            health,
            unrelayed: Mutex::default(),
            pending: AtomicBool::new(false),
        });
        let lost = Arc::new(AtomicBool::new(false));
        for chan in &relay.channels {
            let rx = relay
                .bus
                .subscribe_lossy(chan.clone(), BUFFER, lost.clone())
                .await
                .map_err(|e| format!("cluster.redis: cannot subscribe to the stream relay: {e}"))?;
            tokio::spawn(receive(
                relay.node.clone(),
                rx,
                io.clone(),
                gate.clone(),
                metrics.clone(),
            ));
        }
        tokio::spawn(watch_losses(lost, io, metrics));
        tokio::spawn(name_unrelayed_on_recovery(Arc::downgrade(&relay)));
        Ok(relay)
    }

    fn channel(&self, user: &str) -> &str {
        let h = user
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        &self.channels[h as usize % CHANNELS]
    }

    fn payload(&self, wire: &impl Serialize) -> Vec<u8> {
        let mut out = self.node.clone().into_bytes();
        // These types always serialize.
        let _ = serde_json::to_writer(&mut out, wire);
        out
    }

    /// Publishes `user`'s stream event to the other nodes; remembers the user when Redis
    /// cannot take it.
    pub async fn publish(&self, user: &str, pos: u64, event: &str, data: &Value) {
        if self.health.is_up() {
            let payload = self.payload(&OutEvent { user, pos, event, data });
            match self.bus.publish(self.channel(user).to_owned(), payload).await {
                Ok(()) => {
                    // Publishes that timed out while Redis stayed up: their users sync now.
                    if self.pending.load(Ordering::Acquire) && self.health.is_up() {
                        self.name_unrelayed().await;
                    }
                    return;
                }
                // It may or may not have gone out: its user is named either way.
                Err(e) => self.health.trouble(&e),
            }
        }
        self.pending.store(true, Ordering::Release);
        let mut u = self.unrelayed.lock().unwrap_or_else(|e| e.into_inner());
        if !u.everyone {
            u.users.insert(user.to_owned());
            if u.users.len() > MAX_NAMED {
                u.users = HashSet::new();
                u.everyone = true;
            }
        }
    }

    /// Tells every node to close the sockets of the users whose events did not go out.
    async fn name_unrelayed(&self) {
        let Unrelayed { users, everyone } = {
            let mut u = self.unrelayed.lock().unwrap_or_else(|e| e.into_inner());
            self.pending.store(false, Ordering::Release);
            std::mem::take(&mut *u)
        };
        if users.is_empty() && !everyone {
            return;
        }
        let named = (!everyone).then(|| users.iter().cloned().collect::<Vec<_>>());
        let payload = self.payload(&Wire::Resync { users: named });
        // One channel is enough: every node listens on all of them.
        if let Err(e) = self.bus.publish(self.channels[0].clone(), payload).await {
            self.health.trouble(&e);
            self.pending.store(true, Ordering::Release);
            let mut u = self.unrelayed.lock().unwrap_or_else(|e| e.into_inner());
            u.everyone |= everyone;
            u.users.extend(users);
        } else {
            tracing::info!(
                users = if everyone { None } else { Some(users.len()) },
                "asked every node to resync the users whose events fan-out missed"
            );
        }
    }
}

async fn receive(
    node: String,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    io: SocketIo<SioAdapter>,
    gate: Arc<StreamGate>,
    metrics: Arc<LiveCounters>,
) {
    while let Some((_, payload)) = rx.recv().await {
        if payload.len() < NODE_ID_LEN || payload[..NODE_ID_LEN] == *node.as_bytes() {
            continue;
        }
        match serde_json::from_slice::<Wire>(&payload[NODE_ID_LEN..]) {
            Ok(Wire::Event { user, pos, event, data }) => gate.admit(&user, pos, &event, &data),
            Ok(Wire::Resync { users }) => {
                let closed = match &users {
                    None => resync_local(&io, &metrics, None),
                    Some(users) => users.iter().map(|u| resync_local(&io, &metrics, Some(u))).sum(),
                };
                tracing::info!(
                    closed,
                    users = users.as_ref().map(Vec::len),
                    "closed sockets at another node's request: fan-out missed events for their users"
                );
            }
            Err(e) => tracing::warn!(error = %e, "stream relay: a message this node cannot read"),
        }
    }
}

/// A relayed event dropped for a full buffer may be anyone's: every socket here resyncs.
async fn watch_losses(lost: Arc<AtomicBool>, io: SocketIo<SioAdapter>, metrics: Arc<LiveCounters>) {
    let mut tick = tokio::time::interval(LOSS_CHECK);
    loop {
        tick.tick().await;
        if lost.swap(false, Ordering::AcqRel) {
            let closed = resync_local(&io, &metrics, None);
            tracing::warn!(
                closed,
                "stream relay buffer overflowed: closed this node's sockets so that they sync"
            );
        }
    }
}

async fn name_unrelayed_on_recovery(relay: std::sync::Weak<StreamRelay>) {
    let Some(mut recoveries) = relay.upgrade().map(|r| r.health.recoveries()) else {
        return;
    };
    while recoveries.changed().await.is_ok() {
        let Some(r) = relay.upgrade() else { return };
        r.name_unrelayed().await;
    }
}
