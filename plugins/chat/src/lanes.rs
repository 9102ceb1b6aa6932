//! Per-sender delivery order.
//!
//! The store commits writes in the order `insert` is called, but each event's future is
//! spawned, so the futures of two back-to-back sends can wake on different threads in
//! either order after their commits. A lane makes each send wait for the previous send
//! of the same sender before it delivers and acks, so delivery follows storage order.
//!
//! Lanes are keyed by a hash of the sender id: two senders that collide merely share a
//! lane (their deliveries are ordered together), which costs nothing in correctness and
//! spares an allocation per send.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

const SHARDS: usize = 64;

/// The last turn taken in a lane: its number, and what fires when it is over.
struct Tail {
    ticket: u64,
    done: oneshot::Receiver<()>,
}

pub(crate) struct Lanes {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<u64, Tail>>]>,
}

/// One send's place in its lane. Dropping it lets the next send go.
pub(crate) struct Turn {
    lanes: Arc<Lanes>,
    key: u64,
    ticket: u64,
    prev: Option<oneshot::Receiver<()>>,
    /// Dropping it wakes the next turn.
    done: Option<oneshot::Sender<()>>,
}

impl Lanes {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Lanes {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, HashMap<u64, Tail>> {
        // A panic elsewhere cannot leave a map half-updated: every update is one statement.
        self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The lane of `sender`.
    pub(crate) fn key(&self, sender: &str) -> u64 {
        self.hasher.hash_one(sender)
    }

    /// Takes the next turn in lane `key` and runs `enqueue` while holding the lane, so
    /// what `enqueue` queues (the storage write) takes the same place as the turn.
    pub(crate) fn enter<T>(self: &Arc<Self>, key: u64, enqueue: impl FnOnce() -> T) -> (Turn, T) {
        let (tx, rx) = oneshot::channel();
        let mut shard = self.shard(key);
        let (ticket, prev) = match shard.get_mut(&key) {
            Some(tail) => {
                tail.ticket += 1;
                (tail.ticket, Some(std::mem::replace(&mut tail.done, rx)))
            }
            None => {
                shard.insert(key, Tail { ticket: 0, done: rx });
                (0, None)
            }
        };
        let out = enqueue();
        drop(shard);
        (
            Turn {
                lanes: self.clone(),
                key,
                ticket,
                prev,
                done: Some(tx),
            },
            out,
        )
    }
}

impl Turn {
    /// Waits until every earlier turn of the lane is over. Cancel-safe: a wait that is
    /// dropped half-way can be started again.
    pub(crate) async fn wait(&mut self) {
        if let Some(prev) = self.prev.as_mut() {
            // The previous turn signals by dropping its sender, so an error is the go-ahead.
            let _ = prev.await;
            self.prev = None;
        }
    }
}

impl Lanes {
    /// Forgets lane `key` if `ticket` is still its last turn (nobody queued behind), which
    /// bounds the map by the senders with sends in flight.
    fn release(&self, key: u64, ticket: u64) {
        let mut shard = self.shard(key);
        if shard.get(&key).is_some_and(|t| t.ticket == ticket) {
            shard.remove(&key);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Dropped before its turn came (a cancelled task): pass the turn on only once the
        // previous one is over, so later sends still cannot overtake earlier ones.
        if let Some(prev) = self.prev.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (lanes, key, ticket, done) = (self.lanes.clone(), self.key, self.ticket, self.done.take());
            rt.spawn(async move {
                let _ = prev.await;
                lanes.release(key, ticket);
                drop(done);
            });
            return;
        }
        self.lanes.release(self.key, self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn turns_finish_in_the_order_they_were_taken() {
        let lanes = Lanes::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let (mut turn, ()) = lanes.enter(lanes.key("alice"), || ());
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                // Later turns finish their own work first; the lane still orders them.
                tokio::time::sleep(Duration::from_micros((200 - i) * 10)).await;
                turn.wait().await;
                order.lock().unwrap().push(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..200).collect::<Vec<_>>());
        assert!(
            lanes.shards.iter().all(|s| s.lock().unwrap().is_empty()),
            "finished lanes are removed"
        );
    }

    #[tokio::test]
    async fn a_turn_dropped_early_still_waits_for_the_one_before() {
        let lanes = Lanes::new();
        let (first, ()) = lanes.enter(lanes.key("dave"), || ());
        let (second, ()) = lanes.enter(lanes.key("dave"), || ());
        let (mut third, ()) = lanes.enter(lanes.key("dave"), || ());
        drop(second);
        let early = tokio::time::timeout(Duration::from_millis(50), third.wait()).await;
        assert!(early.is_err(), "the third turn must still wait for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), third.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_turn_releases_the_next() {
        let lanes = Lanes::new();
        let (first, ()) = lanes.enter(lanes.key("bob"), || ());
        let (mut second, ()) = lanes.enter(lanes.key("bob"), || ());
        let (mut other, ()) = lanes.enter(lanes.key("carol"), || ());
        other.wait().await;
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.wait())
            .await
            .unwrap();
    }
}
