//! Stream events (messages, DESIGN §4 Streams) to this node's sockets: per user in `pos`
//! order, and never skipped where a socket's buffer is full.
//!
//! Commits come back to their tasks in commit order, but the tasks then run in any order,
//! and relayed events from other nodes arrive whenever Redis hands them over. So each
//! user has a line here: an event one past the last one emitted goes out at once, one
//! further ahead waits (at most [`HOLD`]) for the positions before it, and one that comes
//! after a larger position already went out is dropped, because its client has seen the
//! gap and syncs it. A hole that never fills (a commit whose emit was lost, an event from
//! a node that died) costs the events behind it one hold, not their delivery.
//!
//! A line starts at the first event seen for its user (after a restart, or a minute of
//! quiet), taking the positions before it as emitted. When two commits race to open a
//! line, the smaller one comes second: nothing of it went out yet, so it goes out at once,
//! out of order (the one exception to the order; a client that follows the rule syncs the
//! gap it saw and ignores the repeat, an old client simply gets both).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::time::Instant;

use super::{LiveCounters, Reorder};

/// How long an event waits for the smaller positions of its user.
pub const HOLD: Duration = Duration::from_millis(300);

/// Past this many events waiting for one user, they all go out (in order).
const MAX_HELD: usize = 1024;

/// A user's line is forgotten after this long without events.
const IDLE: Duration = Duration::from_secs(60);

const SHARDS: usize = 64;

/// Hands one stream event to this node's sockets of a user (see [`super::emit::stream_local`]).
pub type StreamSink = Arc<dyn Fn(&str, &str, &Value) + Send + Sync>;

/// Per-user ordering of this node's stream events.
pub struct StreamGate {
    shards: Box<[Mutex<HashMap<String, Line>>]>,
    sink: StreamSink,
    metrics: Arc<LiveCounters>,
    hold: Duration,
}

struct Line {
    /// The largest position emitted.
    last: u64,
    /// The smallest position the line knows of: nothing before it went out through it.
    start: u64,
    /// Events waiting for the positions before them.
    held: BTreeMap<u64, (String, Value)>,
    /// When the held events go out even if the hole before them is still open.
    deadline: Option<Instant>,
    /// A task is waiting for `deadline`.
    timer: bool,
    touched: Instant,
}

impl StreamGate {
    pub fn new(sink: StreamSink, metrics: Arc<LiveCounters>, hold: Duration) -> Arc<Self> {
        let gate = Arc::new(StreamGate {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            sink,
            metrics,
            hold,
        });
        tokio::spawn(sweep(Arc::downgrade(&gate)));
        gate
    }

    /// A gate whose events go to `io`'s local sockets.
    pub fn local<A: Adapter>(io: SocketIo<A>, metrics: Arc<LiveCounters>) -> Arc<Self> {
        let m = metrics.clone();
        Self::new(
            Arc::new(move |user: &str, event: &str, data: &Value| {
                super::emit::stream_local(&io, &m, user, event, data)
            }),
            metrics,
            HOLD,
        )
    }

    fn shard(&self, user: &str) -> &Mutex<HashMap<String, Line>> {
        // FNV-1a: cheap, and users' ids are random already.
        let h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[h as usize % SHARDS]
    }

    /// Emits `user`'s event at `pos` in order (position 0: no position, at once).
    pub fn admit(self: &Arc<Self>, user: &str, pos: u64, event: &str, data: &Value) {
        if pos == 0 {
            (self.sink)(user, event, data);
            return;
        }
        let now = Instant::now();
        let mut shard = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
        let line = match shard.get_mut(user) {
            Some(line) => line,
            // The first event seen for this user: what came before is taken as emitted.
            None => shard.entry(user.to_owned()).or_insert(Line {
                last: pos - 1,
                start: pos,
                held: BTreeMap::new(),
                deadline: None,
                timer: false,
                touched: now,
            }),
        };
        line.touched = now;
        if pos < line.start {
            // Lost a race to open the line: never emitted, so out of order rather than not.
            self.metrics.stream_reordered(Reorder::Unordered);
            (self.sink)(user, event, data);
            line.start = pos;
            return;
        }
        if pos <= line.last {
            self.metrics.stream_reordered(Reorder::Late);
            tracing::debug!(
                user,
                pos,
                last = line.last,
                event,
                "stream event later than a larger position: left to sync"
            );
            return;
        }
        if pos == line.last + 1 {
            (self.sink)(user, event, data);
            line.last = pos;
            self.release_ready(user, line);
            return;
        }
        self.metrics.stream_reordered(Reorder::Held);
        line.held.insert(pos, (event.to_owned(), data.clone()));
        if line.held.len() > MAX_HELD {
            self.release_all(user, line);
            return;
        }
        if line.deadline.is_none() {
            line.deadline = Some(now + self.hold);
        }
        if !line.timer {
            line.timer = true;
            tokio::spawn(wait_for_hole(Arc::downgrade(self), user.to_owned()));
        }
    }

    /// Emits the held events that follow `last` without a hole.
    fn release_ready(&self, user: &str, line: &mut Line) {
        while let Some(entry) = line.held.first_entry()
            && *entry.key() == line.last + 1
        {
            let (pos, (event, data)) = entry.remove_entry();
            (self.sink)(user, &event, &data);
            line.last = pos;
        }
        if line.held.is_empty() {
            line.deadline = None;
        }
    }

    /// Emits every held event, in order, over the holes.
    fn release_all(&self, user: &str, line: &mut Line) {
        for (pos, (event, data)) in std::mem::take(&mut line.held) {
            (self.sink)(user, &event, &data);
            line.last = pos;
        }
        line.deadline = None;
    }

    /// The timer's turn: `Some(deadline)` to wait again, `None` when nothing is held.
    fn on_timer(&self, user: &str) -> Option<Instant> {
        let mut shard = self.shard(user).lock().unwrap_or_else(|e| e.into_inner());
        let line = shard.get_mut(user)?;
        match line.deadline {
            Some(d) if d > Instant::now() => Some(d),
            Some(_) => {
                self.release_all(user, line);
                line.timer = false;
                None
            }
            None => {
                line.timer = false;
                None
            }
        }
    }

    fn forget_idle(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, l| l.timer || now.duration_since(l.touched) < IDLE);
        }
    }
}

async fn wait_for_hole(gate: Weak<StreamGate>, user: String) {
    let mut deadline = match gate.upgrade() {
        Some(g) => Instant::now() + g.hold,
        None => return,
    };
    loop {
        tokio::time::sleep_until(deadline).await;
        let Some(g) = gate.upgrade() else { return };
        match g.on_timer(&user) {
            Some(next) => deadline = next,
            None => return,
        }
    }
}

async fn sweep(gate: Weak<StreamGate>) {
    let mut tick = tokio::time::interval(IDLE);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(g) = gate.upgrade() else { return };
        g.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the sink was handed: (user, pos).
    type Seen = Arc<Mutex<Vec<(String, u64)>>>;

    fn recorder(hold: Duration) -> (Arc<StreamGate>, Seen) {
        let seen: Seen = Arc::default();
        let sink_seen = seen.clone();
        let sink: StreamSink = Arc::new(move |user: &str, _: &str, data: &Value| {
            sink_seen
                .lock()
                .unwrap()
                .push((user.to_owned(), data["pos"].as_u64().unwrap()))
        });
        (StreamGate::new(sink, Arc::new(LiveCounters::default()), hold), seen)
    }

    fn admit(g: &Arc<StreamGate>, user: &str, pos: u64) {
        g.admit(user, pos, "receive_message", &serde_json::json!({"pos": pos}));
    }

    fn positions(seen: &Mutex<Vec<(String, u64)>>, user: &str) -> Vec<u64> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, p)| *p)
            .collect()
    }

    #[tokio::test]
    async fn events_go_out_in_position_order_per_user() {
        let (g, seen) = recorder(Duration::from_secs(3600));
        admit(&g, "a", 5);
        admit(&g, "a", 7);
        admit(&g, "b", 9);
        admit(&g, "a", 8);
        assert_eq!(positions(&seen, "a"), [5], "7 and 8 wait for 6");
        admit(&g, "a", 6);
        assert_eq!(positions(&seen, "a"), [5, 6, 7, 8]);
        assert_eq!(positions(&seen, "b"), [9], "other users do not wait");
        admit(&g, "a", 6);
        assert_eq!(positions(&seen, "a"), [5, 6, 7, 8], "a repeat is not emitted again");
    }

    #[tokio::test]
    async fn the_loser_of_a_race_to_open_a_line_still_goes_out() {
        let (g, seen) = recorder(Duration::from_secs(3600));
        admit(&g, "a", 8);
        admit(&g, "a", 7);
        admit(&g, "a", 9);
        admit(&g, "a", 6);
        assert_eq!(positions(&seen, "a"), [8, 7, 9, 6], "nothing before the start went out");
        admit(&g, "a", 7);
        admit(&g, "a", 8);
        assert_eq!(positions(&seen, "a"), [8, 7, 9, 6], "repeats are not emitted again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hole_that_never_fills_costs_one_hold() {
        let hold = Duration::from_millis(300);
        let (g, seen) = recorder(hold);
        admit(&g, "a", 1);
        admit(&g, "a", 3);
        admit(&g, "a", 4);
        tokio::time::sleep(hold / 2).await;
        assert_eq!(positions(&seen, "a"), [1]);
        tokio::time::sleep(hold).await;
        assert_eq!(positions(&seen, "a"), [1, 3, 4], "released over the hole, in order");
        admit(&g, "a", 2);
        admit(&g, "a", 5);
        assert_eq!(positions(&seen, "a"), [1, 3, 4, 5], "a late event is left to sync");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_hole_gets_a_full_hold() {
        let hold = Duration::from_millis(300);
        let (g, seen) = recorder(hold);
        admit(&g, "a", 1);
        admit(&g, "a", 3);
        admit(&g, "a", 2);
        tokio::time::sleep(hold * 2 / 3).await;
        admit(&g, "a", 5);
        tokio::time::sleep(hold * 2 / 3).await;
        assert_eq!(
            positions(&seen, "a"),
            [1, 2, 3],
            "the first timer does not cut the new hold short"
        );
        admit(&g, "a", 4);
        assert_eq!(positions(&seen, "a"), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn too_many_held_events_go_out() {
        let (g, seen) = recorder(Duration::from_secs(3600));
        admit(&g, "a", 1);
        for pos in 3..=(MAX_HELD as u64 + 3) {
            admit(&g, "a", pos);
        }
        let out = positions(&seen, "a");
        assert_eq!(out.len(), MAX_HELD + 2);
        assert!(out.windows(2).all(|w| w[0] < w[1]), "still in order");
    }
}
