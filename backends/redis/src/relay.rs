//! Stream events across nodes: a node emits a message to its own sockets through its
//! [`StreamGate`] and publishes it once on a channel of the user's; every other node hands
//! it to its gate, which orders it among that user's events and closes a socket that
//! cannot take it (DESIGN §5: no silent drops). socketioxide-redis would drop an emit for
//! a full socket on a remote node unseen, so stream events do not go through it.
//!
//! Events are not published one by one: the caller queues its event and goes on (its
//! ack waits for storage, never for Redis), and one task per node publishes what queued
//! meanwhile as one batch per channel, so a busy node makes one `PUBLISH` for many events
//! and a quiet one still one per event, with no wait added. A node decodes only the
//! envelope of each event and leaves the data of users it has no socket for unparsed.
//!
//! What fan-out could not carry is made up by the clients' sync: when Redis is back after
//! an outage, the node names the users whose events it could not publish (every node
//! closes their sockets), and the kernel closes its own sockets (they may have missed
//! other nodes' events meanwhile; see `app.rs`). A relay buffer that overflowed does the
//! same for this node's sockets.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_sdk::auth::CredentialId;
use confab_sdk::realtime::user_room;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide_redis::drivers::Driver;
use tokio::sync::{Notify, mpsc};

use crate::fanout::{BusDriver, SioAdapter};
use crate::health::RedisHealth;
use confab_sdk::live::LiveCounters;
use confab_sdk::live::{StreamGate, end_credential_local, resync_local};

/// Channels the users are spread over (each its own slot on a Redis Cluster).
const CHANNELS: usize = 16;

/// Relayed events a channel queues before it drops one (and resyncs).
const BUFFER: usize = 64 * 1024;

/// Past this many users to name, a resync names everyone.
const MAX_NAMED: usize = 10_000;

/// How often a dropped relayed event is looked for.
const LOSS_CHECK: Duration = Duration::from_millis(200);

/// Events, and bytes of them, queued for publishing before new ones are refused (and
/// their users resync).
const MAX_QUEUED: usize = 64 * 1024;
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// How often users whose events did not go out are named again while Redis is up (a
/// publish that timed out on a quiet node has no later publish to do it).
const RENAME_EVERY: Duration = Duration::from_secs(1);

/// A batch is cut into payloads of about this size.
const MAX_PAYLOAD: usize = 256 * 1024;

/// Node ids are this long (`random_token`); every payload starts with its sender's. After
/// it comes a JSON array of events (a batch), or a [`Wire`] object.
const NODE_ID_LEN: usize = 32;

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    /// One stream event for `user`'s sockets (what nodes before batching published; still
    /// read, so that a rolling upgrade loses nothing from the old nodes).
    Event {
        user: String,
        pos: u64,
        event: String,
        data: Value,
    },
    /// Close these users' sockets (all when `users` is absent): events for them were lost.
    Resync { users: Option<Vec<String>> },
    /// End `user`'s sockets that `credential` opened (`Emitter::end_credential`).
    End {
        user: String,
        credential: CredentialId,
        code: String,
        message: String,
    },
}

/// One event of a batch, as published.
#[derive(Serialize)]
struct OutEvent<'a> {
    user: &'a str,
    pos: u64,
    event: &'a str,
    data: &'a Value,
}

/// One event of a batch, as read: its data stays raw until a local socket wants it.
#[derive(Deserialize)]
struct InEvent<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    pos: u64,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Just the users of a batch (to name them when its publish failed).
#[derive(Deserialize)]
struct EventUser<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
}

/// Serialized events waiting for the publisher, one buffer per channel group (one group
/// on a single Redis, where every channel keeps one connection's order; a group per
/// channel on a cluster, where a user's events keep order only within their channel).
struct Outbox {
    /// Comma-separated events of each group.
    groups: Vec<Vec<u8>>,
    queued: usize,
    bytes: usize,
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
    outbox: Mutex<Outbox>,
    /// One outbox group per channel (a cluster), or one for all (a single Redis).
    per_channel: bool,
    /// Wakes the publisher when the outbox stops being empty.
    wake: Arc<Notify>,
}

impl Drop for StreamRelay {
    fn drop(&mut self) {
        // The publisher waits on this; let it see the relay is gone.
        self.wake.notify_one();
    }
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
        let per_channel = bus.conn().is_cluster();
        let relay = Arc::new(StreamRelay {
            bus,
            channels: (0..CHANNELS).map(|n| format!("{prefix}stream#{{{n}}}")).collect(),
            node: confab_sdk::ids::random_token(),
            health,
            unrelayed: Mutex::default(),
            pending: AtomicBool::new(false),
            outbox: Mutex::new(Outbox {
                groups: vec![Vec::new(); if per_channel { CHANNELS } else { 1 }],
                queued: 0,
                bytes: 0,
            }),
            per_channel,
            wake: Arc::new(Notify::new()),
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
        tokio::spawn(publish_queued(Arc::downgrade(&relay), relay.wake.clone()));
        tokio::spawn(watch_losses(lost, io, metrics));
        tokio::spawn(name_unrelayed_on_recovery(Arc::downgrade(&relay)));
        Ok(relay)
    }

    fn channel_index(&self, user: &str) -> usize {
        let h = user
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        h as usize % CHANNELS
    }

    fn payload(&self, wire: &impl Serialize) -> Vec<u8> {
        let mut out = self.node.clone().into_bytes();
        // These types always serialize.
        let _ = serde_json::to_writer(&mut out, wire);
        out
    }

    /// Queues `user`'s stream event for the other nodes; remembers the user when Redis
    /// cannot take it (it is down, or too far behind).
    pub fn publish(&self, user: &str, pos: u64, event: &str, data: &Value) {
        if self.health.is_up() {
            // Serialized here, on the caller's task, so that the publisher only copies.
            let json = serde_json::to_vec(&OutEvent { user, pos, event, data }).unwrap_or_default();
            let group = if self.per_channel { self.channel_index(user) } else { 0 };
            let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            if !json.is_empty() && outbox.queued < MAX_QUEUED && outbox.bytes < MAX_QUEUED_BYTES {
                let was_empty = outbox.queued == 0;
                let buf = &mut outbox.groups[group];
                if !buf.is_empty() {
                    buf.push(b',');
                }
                buf.extend_from_slice(&json);
                outbox.queued += 1;
                outbox.bytes += json.len();
                drop(outbox);
                if was_empty {
                    self.wake.notify_one();
                }
                return;
            }
        }
        self.unrelayed(std::iter::once(user));
    }

    /// Asks the other nodes to end `user`'s sockets that `credential` opened. When that
    /// cannot go out, the user is named for a resync instead (as for a lost stream event):
    /// every node closes the user's sockets, and a reconnect with the ended credential is
    /// refused at its handshake.
    pub async fn publish_end(&self, user: &str, credential: &CredentialId, code: &str, message: &str) {
        if self.health.is_up() {
            let payload = self.payload(&Wire::End {
                user: user.to_owned(),
                credential: credential.clone(),
                code: code.to_owned(),
                message: message.to_owned(),
            });
            match self
                .bus
                .publish(self.channels[self.channel_index(user)].clone(), payload)
                .await
            {
                Ok(()) => return,
                Err(e) => self.health.trouble(&e),
            }
        }
        tracing::warn!(
            user,
            "could not ask the other nodes to end a credential's sockets: the user's sockets resync instead"
        );
        self.unrelayed(std::iter::once(user));
    }

    fn unrelayed<'a>(&self, users: impl IntoIterator<Item = &'a str>) {
        self.pending.store(true, Ordering::Release);
        let mut u = self.unrelayed.lock().unwrap_or_else(|e| e.into_inner());
        if u.everyone {
            return;
        }
        for user in users {
            if !u.users.contains(user) {
                u.users.insert(user.to_owned());
            }
        }
        if u.users.len() > MAX_NAMED {
            u.users = HashSet::new();
            u.everyone = true;
        }
    }

    /// Takes what queued: for each group that had events, its channel and its payloads
    /// (one, or more for a large batch), in order.
    fn take_queued(&self) -> Vec<(usize, Vec<Vec<u8>>)> {
        let groups = {
            let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            if outbox.queued == 0 {
                return Vec::new();
            }
            outbox.queued = 0;
            outbox.bytes = 0;
            let n = outbox.groups.len();
            std::mem::replace(&mut outbox.groups, vec![Vec::new(); n])
        };
        let mut out = Vec::new();
        for (group, events) in groups.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            let parts = split_batch(&events, MAX_PAYLOAD).into_iter().map(|part| {
                let mut payload = Vec::with_capacity(NODE_ID_LEN + part.len() + 2);
                payload.extend_from_slice(self.node.as_bytes());
                payload.push(b'[');
                payload.extend_from_slice(part);
                payload.push(b']');
                payload
            });
            out.push((group, parts.collect()));
        }
        out
    }

    /// Publishes one round of queued batches: the groups at once, the parts of one group
    /// in order (a user's events stay in order). The users of a part that failed are named.
    async fn publish_round(&self, groups: Vec<(usize, Vec<Vec<u8>>)>) {
        join_all(groups.into_iter().map(|(chan, parts)| async move {
            for payload in parts {
                if let Err(e) = self.bus.publish_slice(&self.channels[chan], &payload).await {
                    // It may or may not have gone out: its users are named either way.
                    self.health.trouble(&e);
                    match serde_json::from_slice::<Vec<EventUser>>(&payload[NODE_ID_LEN..]) {
                        Ok(users) => self.unrelayed(users.iter().map(|u| u.user.as_ref())),
                        Err(_) => self.unrelayed_everyone(),
                    }
                }
            }
        }))
        .await;
        // Users whose events did not go out while Redis stayed up sync now.
        if self.pending.load(Ordering::Acquire) && self.health.is_up() {
            self.name_unrelayed().await;
        }
    }

    fn unrelayed_everyone(&self) {
        self.pending.store(true, Ordering::Release);
        self.unrelayed.lock().unwrap_or_else(|e| e.into_inner()).everyone = true;
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
        let body = &payload[NODE_ID_LEN..];
        if body.first() == Some(&b'[') {
            admit_batch(body, &io, &gate, &metrics);
            continue;
        }
        match serde_json::from_slice::<Wire>(body) {
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
            Ok(Wire::End {
                user,
                credential,
                code,
                message,
            }) => {
                let ended = end_credential_local(&io, &user, &credential, &code, &message);
                tracing::debug!(ended, "ended sockets at another node's request: their credential ended");
            }
            Err(e) => tracing::warn!(error = %e, "stream relay: a message this node cannot read"),
        }
    }
}

/// Hands a batch's events to the gate, parsing the data only of users with a socket here
/// (a user with none has no line to keep either: a socket that connects later syncs).
/// A batch this node cannot read may hold anyone's events: every socket here resyncs.
fn admit_batch(body: &[u8], io: &SocketIo<SioAdapter>, gate: &Arc<StreamGate>, metrics: &LiveCounters) {
    let events: Vec<InEvent> = match serde_json::from_slice(body) {
        Ok(events) => events,
        Err(e) => {
            let closed = resync_local(io, metrics, None);
            tracing::warn!(error = %e, closed, "stream relay: a batch this node cannot read; closed its sockets so that they sync");
            return;
        }
    };
    for e in events {
        if io.local().to(user_room(&e.user)).sockets().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(e.data.get()) {
            Ok(data) => gate.admit(&e.user, e.pos, &e.event, &data),
            Err(err) => tracing::warn!(error = %err, "stream relay: an event this node cannot read"),
        }
    }
}

/// Splits comma-separated JSON values into runs of about `max` bytes, at commas between
/// values (events are objects: a comma at depth 0 outside strings separates two).
fn split_batch(events: &[u8], max: usize) -> Vec<&[u8]> {
    if events.len() <= max {
        return vec![events];
    }
    let mut parts = Vec::new();
    let (mut start, mut depth, mut in_str, mut escaped) = (0, 0i32, false, false);
    for (i, &b) in events.iter().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 && i - start >= max => {
                parts.push(&events[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&events[start..]);
    parts
}

/// Publishes whatever queued, round after round, while there is some; names the users
/// of failed publishes again every [`RENAME_EVERY`] while any wait.
async fn publish_queued(relay: std::sync::Weak<StreamRelay>, wake: Arc<Notify>) {
    loop {
        if tokio::time::timeout(RENAME_EVERY, wake.notified()).await.is_err() {
            let Some(relay) = relay.upgrade() else { return };
            if relay.pending.load(Ordering::Acquire) && relay.health.is_up() {
                relay.name_unrelayed().await;
            }
            continue;
        }
        let Some(relay) = relay.upgrade() else { return };
        loop {
            let batches = relay.take_queued();
            if batches.is_empty() {
                break;
            }
            relay.publish_round(batches).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<u8> {
        let data = serde_json::json!({"message": "a, {tricky} \"text\" [with] \\\\ commas,", "n": [1, 2]});
        let events: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let user = format!("user-{i}");
                let event = OutEvent {
                    user: &user,
                    pos: i as u64 + 1,
                    event: "receive_message",
                    data: &data,
                };
                serde_json::to_vec(&event).unwrap()
            })
            .collect();
        events.join(&b","[..])
    }

    fn read(part: &[u8]) -> Vec<(String, u64, String, Value)> {
        let body = [b"[", part, b"]"].concat();
        let events: Vec<InEvent> = serde_json::from_slice(&body).unwrap();
        events
            .into_iter()
            .map(|e| {
                (
                    e.user.into_owned(),
                    e.pos,
                    e.event.into_owned(),
                    serde_json::from_str(e.data.get()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_small_batch_is_one_payload_and_reads_back_whole() {
        let events = batch(3);
        let parts = split_batch(&events, MAX_PAYLOAD);
        assert_eq!(parts.len(), 1);
        let read = read(parts[0]);
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].0, "user-2");
        assert_eq!(read[2].1, 3);
        assert_eq!(read[2].3["message"], "a, {tricky} \"text\" [with] \\\\ commas,");
    }

    #[test]
    fn a_large_batch_splits_between_events_only() {
        let events = batch(500);
        let parts = split_batch(&events, 4096);
        assert!(parts.len() > 10, "{} parts", parts.len());
        let all: Vec<_> = parts.iter().flat_map(|p| read(p)).collect();
        assert_eq!(all.len(), 500);
        for (i, (user, pos, _, _)) in all.iter().enumerate() {
            assert_eq!(user, &format!("user-{i}"));
            assert_eq!(*pos, i as u64 + 1);
        }
        // Each part is about the size asked for: one event past it at most.
        let one = events.len() / 500 + 1;
        assert!(parts.iter().all(|p| p.len() <= 4096 + one));
    }

    #[test]
    fn the_users_of_a_failed_batch_can_be_named() {
        let body = [b"[", &batch(4)[..], b"]"].concat();
        let users: Vec<EventUser> = serde_json::from_slice(&body).unwrap();
        let users: Vec<&str> = users.iter().map(|u| u.user.as_ref()).collect();
        assert_eq!(users, ["user-0", "user-1", "user-2", "user-3"]);
    }
}
