//! Presence on this node: counting sockets in the cluster's presence store in the order
//! they connect and close, and telling subscribers (room `presence:<userId>`, which the
//! cluster adapter carries to every node) when a user goes online or offline.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use confab_sdk::cluster::{PresenceState, SharedPresenceStore};
use confab_sdk::realtime::SharedEmitter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::PresenceConfig;

/// The room a socket joins to hear about `user_id`.
pub fn presence_room(user_id: &str) -> String {
    format!("presence:{user_id}")
}

/// Store calls of one user run in one lane, one at a time, in the order the sockets
/// connected and closed; different users proceed in parallel across lanes.
const LANES: usize = 8;

enum Op {
    Connected(String),
    Disconnected(String),
    /// Ends the lane once everything queued before it is done.
    Stop(oneshot::Sender<()>),
}

#[derive(Default)]
struct Sockets {
    /// Sockets counted in the store (their user is the principal's, given again when they
    /// close: one string per socket instead of two, for the life of every socket).
    counted: HashSet<Box<str>>,
    /// Sockets that closed before their connect hook ran: the hook must not count them.
    closed_early: HashSet<String>,
    /// The users each socket watches.
    watching: HashMap<String, HashSet<String>>,
}

pub(crate) struct Presence {
    pub store: SharedPresenceStore,
    pub emitter: SharedEmitter,
    pub config: PresenceConfig,
    sockets: Mutex<Sockets>,
    lanes: OnceLock<Vec<mpsc::UnboundedSender<Op>>>,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a handful of inserts and removes; a panicked holder leaves nothing
    // half-done that matters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn to_json(state: &PresenceState) -> serde_json::Value {
    serde_json::to_value(state).unwrap_or_default()
}

/// Tells `user_id`'s subscribers, wherever they are connected.
async fn announce(emitter: &SharedEmitter, state: &PresenceState) {
    emitter
        .to_room(&presence_room(&state.user_id), "presence", &to_json(state))
        .await;
}

impl Presence {
    pub fn new(store: SharedPresenceStore, emitter: SharedEmitter, config: PresenceConfig) -> Arc<Self> {
        Arc::new(Presence {
            store,
            emitter,
            config,
            sockets: Mutex::default(),
            lanes: OnceLock::new(),
            sweeper: Mutex::default(),
        })
    }

    /// Starts the lanes and the sweep task. Needs a Tokio runtime; safe to call again.
    pub fn start(self: &Arc<Self>) {
        self.lanes();
    }

    fn lanes(self: &Arc<Self>) -> &[mpsc::UnboundedSender<Op>] {
        self.lanes.get_or_init(|| {
            if let Some(every) = self.store.sweep_interval() {
                *lock(&self.sweeper) = Some(tokio::spawn(sweep(Arc::downgrade(self), every)));
            }
            (0..LANES)
                .map(|_| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(lane(rx, self.store.clone(), self.emitter.clone()));
                    tx
                })
                .collect()
        })
    }

    /// At shutdown (the sockets are closed by then): stops the sweep, lets every lane
    /// finish the updates queued (the last sockets' closes, so that their users go
    /// offline), and ends the lanes. Later updates are dropped.
    pub async fn shutdown(&self) {
        if let Some(sweeper) = lock(&self.sweeper).take() {
            sweeper.abort();
        }
        let Some(lanes) = self.lanes.get() else { return };
        let mut done = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let (tx, rx) = oneshot::channel();
            if lane.send(Op::Stop(tx)).is_ok() {
                done.push(rx);
            }
        }
        for rx in done {
            let _ = rx.await;
        }
    }

    fn enqueue(self: &Arc<Self>, user: &str, op: Op) {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        let lanes = self.lanes();
        // A lane stops at shutdown only: what comes after is not counted.
        let _ = lanes[(h.finish() % lanes.len() as u64) as usize].send(op);
    }

    /// A socket of `user` connected (its connect hook).
    pub fn socket_opened(self: &Arc<Self>, socket: &str, user: &str) {
        {
            let mut s = lock(&self.sockets);
            if s.closed_early.remove(socket) {
                return;
            }
            s.counted.insert(socket.into());
        }
        self.enqueue(user, Op::Connected(user.to_owned()));
    }

    /// A socket closed (its disconnect hook). The hooks of one socket may run in either
    /// order; a socket is counted down only if it was counted up.
    pub fn socket_closed(self: &Arc<Self>, socket: &str, user: &str) {
        {
            let mut s = lock(&self.sockets);
            s.watching.remove(socket);
            if !s.counted.remove(socket) {
                s.closed_early.insert(socket.to_owned());
                return;
            }
        }
        self.enqueue(user, Op::Disconnected(user.to_owned()));
    }

    /// Records that `socket` watches `users` (already validated, deduplicated). Returns the
    /// users not watched before, or `Err(limit)` if that would exceed the per-socket limit.
    pub fn watch(&self, socket: &str, users: &[String]) -> Result<Vec<String>, usize> {
        let limit = self.config.max_subscriptions_per_socket;
        let mut s = lock(&self.sockets);
        let set = s.watching.entry(socket.to_owned()).or_default();
        let new: Vec<String> = users.iter().filter(|u| !set.contains(*u)).cloned().collect();
        if set.len() + new.len() > limit {
            if set.is_empty() {
                s.watching.remove(socket);
            }
            return Err(limit);
        }
        set.extend(new.iter().cloned());
        Ok(new)
    }

    /// Forgets that `socket` watches `users`; returns those it did watch.
    pub fn unwatch(&self, socket: &str, users: &[String]) -> Vec<String> {
        let mut s = lock(&self.sockets);
        let Some(set) = s.watching.get_mut(socket) else {
            return Vec::new();
        };
        let gone = users.iter().filter(|u| set.remove(*u)).cloned().collect();
        if set.is_empty() {
            s.watching.remove(socket);
        }
        gone
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize, usize) {
        let s = lock(&self.sockets);
        (s.counted.len(), s.closed_early.len(), s.watching.len())
    }
}

async fn lane(mut rx: mpsc::UnboundedReceiver<Op>, store: SharedPresenceStore, emitter: SharedEmitter) {
    while let Some(op) = rx.recv().await {
        let result = match op {
            Op::Connected(user) => store.connected(&user).await,
            Op::Disconnected(user) => store.disconnected(&user).await,
            Op::Stop(done) => {
                let _ = done.send(());
                return;
            }
        };
        match result {
            Ok(Some(state)) => announce(&emitter, &state).await,
            Ok(None) => {}
            // The store logs outages itself and catches up when its backend returns.
            Err(e) => tracing::debug!(error = %e, "presence update failed"),
        }
    }
}

/// Heart-beats and expires dead nodes' users for as long as the plugin lives.
async fn sweep(presence: Weak<Presence>, every: Duration) {
    // Not at once: the plugin starts before the kernel registers its namespace, and an
    // announcement before that panics in socketioxide (seen at boot on Redis, where the
    // first sweep finds the users of a node that died), which ended this task for good.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(p) = presence.upgrade() else { return };
        match p.store.sweep().await {
            Ok(changes) => {
                for state in &changes {
                    announce(&p.emitter, state).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_sdk::async_trait;
    use confab_sdk::realtime::Emitter;
    use confab_sdk::storage::StorageResult;
    use serde_json::Value;

    /// Records the calls it gets; answers like a one-node store.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        counts: Mutex<HashMap<String, i64>>,
    }

    #[async_trait]
    impl confab_sdk::cluster::PresenceStore for Recorder {
        async fn connected(&self, user: &str) -> StorageResult<Option<PresenceState>> {
            // Yield so that the lanes really interleave.
            tokio::task::yield_now().await;
            lock(&self.calls).push(format!("+{user}"));
            let mut c = lock(&self.counts);
            let n = c.entry(user.to_owned()).or_default();
            *n += 1;
            Ok((*n == 1).then(|| PresenceState::online(user, None)))
        }
        async fn disconnected(&self, user: &str) -> StorageResult<Option<PresenceState>> {
            tokio::task::yield_now().await;
            lock(&self.calls).push(format!("-{user}"));
            let mut c = lock(&self.counts);
            let n = c.entry(user.to_owned()).or_default();
            *n -= 1;
            Ok((*n == 0).then(|| PresenceState::offline(user, None)))
        }
        async fn states(&self, users: &[String]) -> StorageResult<Vec<PresenceState>> {
            Ok(users.iter().map(|u| PresenceState::offline(u, None)).collect())
        }
        fn sweep_interval(&self) -> Option<Duration> {
            None
        }
        async fn sweep(&self) -> StorageResult<Vec<PresenceState>> {
            Ok(Vec::new())
        }
    }

    #[derive(Default)]
    struct Emits(Mutex<Vec<(String, Value)>>);

    #[async_trait]
    impl Emitter for Emits {
        async fn to_user(&self, _: &str, _: &str, _: &Value) {}
        async fn to_room(&self, room: &str, _: &str, data: &Value) {
            lock(&self.0).push((room.to_owned(), data.clone()));
        }
        async fn end_credential(&self, _: &str, _: &confab_sdk::auth::CredentialId, _: &str, _: &str) {}
        fn local_sockets(&self) -> usize {
            0
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn calls_for_one_user_keep_the_order_of_the_hooks() {
        let store = Arc::new(Recorder::default());
        let emits = Arc::new(Emits::default());
        let p = Presence::new(store.clone(), emits.clone(), PresenceConfig::default());
        p.start();
        for i in 0..20 {
            p.socket_opened(&format!("s{i}"), "u1");
            p.socket_closed(&format!("s{i}"), "u1");
        }
        settle().await;
        let calls = lock(&store.calls).clone();
        let expected: Vec<String> = (0..20).flat_map(|_| ["+u1".to_owned(), "-u1".to_owned()]).collect();
        assert_eq!(calls, expected);
        let events = lock(&emits.0).clone();
        assert_eq!(events.len(), 40, "online and offline for every connect/close");
        assert!(events.iter().all(|(room, _)| room == "presence:u1"));
        assert_eq!(p.tracked(), (0, 0, 0));
    }

    #[tokio::test]
    async fn shutdown_finishes_the_queued_updates_then_stops() {
        let store = Arc::new(Recorder::default());
        let p = Presence::new(store.clone(), Arc::new(Emits::default()), PresenceConfig::default());
        p.start();
        for i in 0..10 {
            p.socket_opened(&format!("s{i}"), &format!("u{i}"));
            p.socket_closed(&format!("s{i}"), &format!("u{i}"));
        }
        p.shutdown().await;
        assert_eq!(
            lock(&store.calls).len(),
            20,
            "every queued update ran before the lanes ended"
        );
        p.socket_opened("late", "u1");
        settle().await;
        assert_eq!(lock(&store.calls).len(), 20, "nothing runs after shutdown");
        p.shutdown().await;
    }

    #[tokio::test]
    async fn a_socket_closed_before_its_connect_hook_is_never_counted() {
        let store = Arc::new(Recorder::default());
        let p = Presence::new(store.clone(), Arc::new(Emits::default()), PresenceConfig::default());
        p.start();
        p.socket_closed("s1", "u1");
        p.socket_opened("s1", "u1");
        settle().await;
        assert!(lock(&store.calls).is_empty());
        assert_eq!(p.tracked(), (0, 0, 0), "the tombstone is consumed");
    }

    #[tokio::test]
    async fn subscriptions_are_bounded_per_socket() {
        let config = PresenceConfig {
            max_ids_per_request: 2,
            max_subscriptions_per_socket: 3,
        };
        let p = Presence::new(Arc::new(Recorder::default()), Arc::new(Emits::default()), config);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(p.watch("s", &ids(&["a", "b"])).unwrap(), ids(&["a", "b"]));
        assert_eq!(
            p.watch("s", &ids(&["b", "c"])).unwrap(),
            ids(&["c"]),
            "already watched ones are not new"
        );
        assert_eq!(p.watch("s", &ids(&["d"])), Err(3));
        assert_eq!(p.unwatch("s", &ids(&["a", "x"])), ids(&["a"]));
        assert!(p.watch("s", &ids(&["d"])).is_ok());
        p.socket_closed("s", "u");
        assert_eq!(p.tracked(), (0, 1, 0));
    }
}
