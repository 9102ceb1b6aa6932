//! Group commit at low rates: how long the writer waits for more commands before it
//! commits a small batch.
//!
//! Flat out, commands queue while a batch commits, so batches fill on their own. At a
//! few thousand writes a second they do not: each command would get a transaction of its
//! own, and a commit (WAL frames, checksums, page-cache work) costs several times the
//! insert. Waiting up to `linger` lets the next commands join, but only when they are
//! likely to come: the writer keeps a moving estimate of the arrival rate and lingers
//! only when at least half a command is expected within the wait, so a quiet server adds
//! no latency.

use std::time::{Duration, Instant};

/// Weight of the newest batch in the rate estimate.
const ALPHA: f64 = 0.2;

/// Commands expected within the linger for it to be worth waiting.
const WORTH_WAITING: f64 = 0.5;

pub(crate) struct Linger {
    wait: Duration,
    /// Commands per second, as a moving average over batches.
    rate: f64,
    /// When the previous batch was complete.
    last: Option<Instant>,
}

impl Linger {
    /// `wait` zero: never linger.
    pub(crate) fn new(wait: Duration) -> Self {
        Linger {
            wait,
            rate: 0.0,
            last: None,
        }
    }

    /// How long to wait for more commands before committing a batch that is not full.
    pub(crate) fn wait(&self) -> Option<Duration> {
        (!self.wait.is_zero() && self.rate * self.wait.as_secs_f64() >= WORTH_WAITING).then_some(self.wait)
    }

    /// Records a complete batch of `taken` commands (those that arrived since the
    /// previous one was complete).
    pub(crate) fn taken(&mut self, taken: usize, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).as_secs_f64().max(1e-6);
            self.rate += ALPHA * (taken as f64 / gap - self.rate);
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(linger: &mut Linger, every: Duration, batches: u32) {
        let start = Instant::now();
        for i in 1..=batches {
            linger.taken(1, start + every * i);
        }
    }

    #[test]
    fn lingers_only_when_more_commands_are_expected_within_the_wait() {
        let wait = Duration::from_millis(1);
        let mut busy = Linger::new(wait);
        steady(&mut busy, Duration::from_micros(500), 50);
        assert_eq!(busy.wait(), Some(wait), "2,000 commands/s: worth a 1 ms wait");

        let mut quiet = Linger::new(wait);
        steady(&mut quiet, Duration::from_millis(10), 50);
        assert_eq!(quiet.wait(), None, "100 commands/s: a wait would only add latency");

        let mut first = Linger::new(wait);
        assert_eq!(first.wait(), None, "nothing is known before the first batch");
        first.taken(1, Instant::now());
        assert_eq!(first.wait(), None);
    }

    #[test]
    fn a_zero_linger_never_waits() {
        let mut off = Linger::new(Duration::ZERO);
        steady(&mut off, Duration::from_micros(10), 50);
        assert_eq!(off.wait(), None);
    }

    #[test]
    fn the_estimate_follows_a_rate_that_drops() {
        let mut linger = Linger::new(Duration::from_millis(1));
        let start = Instant::now();
        for i in 1..=50 {
            linger.taken(4, start + Duration::from_millis(i));
        }
        assert!(linger.wait().is_some());
        let later = start + Duration::from_millis(50);
        for i in 1..=20 {
            linger.taken(1, later + Duration::from_millis(20 * i));
        }
        assert_eq!(linger.wait(), None, "50 commands/s after the burst");
    }
}
