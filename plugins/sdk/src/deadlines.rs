//! One timer for many deadlines: actions due at wall-clock times, run by a single task.
//!
//! A task and a `Sleep` per deadline cost several hundred bytes each, which adds up where
//! every idle socket has one (its credential's expiry). Here a deadline is one map entry
//! and a boxed closure; the task sleeps until the earliest one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};

fn now_millis() -> i64 {
    SystemClock.now_millis()
}

type Action = Box<dyn FnOnce() + Send>;

/// Deadlines by (due time in unix milliseconds, sequence number).
pub struct Deadlines {
    due: Mutex<Due>,
    /// Wakes the task when the earliest deadline moved, or when this is dropped.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Due {
    actions: BTreeMap<(i64, u64), Action>,
    next: u64,
}

/// A scheduled action, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(i64, u64);

impl Deadlines {
    /// Starts the timer task on the current runtime; it ends when the returned value is
    /// dropped.
    pub fn start() -> Arc<Self> {
        let deadlines = Arc::new(Deadlines {
            due: Mutex::default(),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(run(Arc::downgrade(&deadlines), deadlines.wake.clone()));
        deadlines
    }

    fn due(&self) -> MutexGuard<'_, Due> {
        // Every update is one map operation: a panic elsewhere leaves no half-made state.
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `action` on the timer task at `at_ms` (unix milliseconds; at once if past).
    pub fn schedule(&self, at_ms: i64, action: impl FnOnce() + Send + 'static) -> Deadline {
        let mut due = self.due();
        due.next += 1;
        let key = (at_ms, due.next);
        let earliest = due.actions.first_key_value().is_none_or(|(first, _)| key < *first);
        due.actions.insert(key, Box::new(action));
        drop(due);
        if earliest {
            self.wake.notify_one();
        }
        Deadline(key.0, key.1)
    }

    /// Drops the action unless it already ran.
    pub fn cancel(&self, deadline: Deadline) {
        self.due().actions.remove(&(deadline.0, deadline.1));
    }

    pub fn len(&self) -> usize {
        self.due().actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the actions due by `now_ms`, and the time of the next one.
    fn take_due(&self, now_ms: i64) -> (Vec<Action>, Option<i64>) {
        let mut due = self.due();
        let later = due.actions.split_off(&(now_ms.saturating_add(1), 0));
        let ready = std::mem::replace(&mut due.actions, later);
        let next = due.actions.first_key_value().map(|((at, _), _)| *at);
        (ready.into_values().collect(), next)
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

async fn run(deadlines: Weak<Deadlines>, wake: Arc<Notify>) {
    loop {
        let Some(d) = deadlines.upgrade() else { return };
        let (ready, next) = d.take_due(now_millis());
        drop(d);
        // Outside the lock: an action may schedule or cancel. One action's panic must not
        // end the timer for every other deadline.
        for action in ready {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(action)).is_err() {
                tracing::error!("a deadline's action panicked");
            }
        }
        match next {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(now_millis()).max(0) as u64);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn until(what: &str, cond: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test]
    async fn actions_run_when_due_in_order_and_cancelled_ones_never() {
        let deadlines = Deadlines::start();
        let order = Arc::new(Mutex::new(Vec::new()));
        let now = now_millis();
        for (i, after) in [(1, 60), (2, 20), (3, 40)] {
            let order = order.clone();
            deadlines.schedule(now + after, move || order.lock().unwrap().push(i));
        }
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let cancelled = deadlines.schedule(now + 30, move || {
            f.fetch_add(1, Ordering::Relaxed);
        });
        deadlines.cancel(cancelled);
        let past = order.clone();
        deadlines.schedule(now - 1_000, move || past.lock().unwrap().push(0));
        until("every action runs", || order.lock().unwrap().len() == 4).await;
        assert_eq!(*order.lock().unwrap(), [0, 2, 3, 1]);
        assert_eq!(fired.load(Ordering::Relaxed), 0, "a cancelled action never runs");
        assert!(deadlines.is_empty());
    }

    #[tokio::test]
    async fn an_earlier_deadline_wakes_a_timer_sleeping_on_a_later_one() {
        let deadlines = Deadlines::start();
        let fired = Arc::new(AtomicUsize::new(0));
        deadlines.schedule(now_millis() + 3_600_000, || {});
        tokio::task::yield_now().await;
        let f = fired.clone();
        deadlines.schedule(now_millis() + 10, move || {
            f.fetch_add(1, Ordering::Relaxed);
        });
        until("the earlier action runs", || fired.load(Ordering::Relaxed) == 1).await;
        assert_eq!(deadlines.len(), 1, "the later one still waits");
    }

    #[tokio::test]
    async fn a_panicking_action_does_not_stop_the_others() {
        let deadlines = Deadlines::start();
        let fired = Arc::new(AtomicUsize::new(0));
        let now = now_millis();
        deadlines.schedule(now, || panic!("an action fails"));
        let f = fired.clone();
        deadlines.schedule(now, move || {
            f.fetch_add(1, Ordering::Relaxed);
        });
        let f = fired.clone();
        deadlines.schedule(now + 20, move || {
            f.fetch_add(1, Ordering::Relaxed);
        });
        until("both other actions run", || fired.load(Ordering::Relaxed) == 2).await;
    }

    #[tokio::test]
    async fn the_task_ends_with_the_deadlines() {
        let deadlines = Deadlines::start();
        let weak = Arc::downgrade(&deadlines);
        deadlines.schedule(now_millis() + 3_600_000, || {});
        drop(deadlines);
        assert!(weak.upgrade().is_none());
    }
}
