//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the committing call, so every thousand
//! pages one unlucky batch would also copy the WAL back into the database and fsync it.
//! Instead the writer never checkpoints on its own: this thread copies committed frames
//! back with PASSIVE checkpoints (which never block the writer), and when the WAL has
//! grown past a bound it asks the writer to restart it between two batches — by then
//! only the short tail the last passive pass missed is left to copy.
//!
//! Passes are paced by how fast the WAL grows, so that each finds about the same number
//! of new frames: a page rewritten many times between two passes is copied back once, so
//! at moderate rates a pass a second costs far less than ten (BENCHMARKS.md, "Cost per
//! message"), while flat out (and in a burst: `COMMANDS_PER_PASS`) the passes come every
//! 100 ms and keep the WAL short.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::rows::is_busy;

/// Shortest and longest wait between two passive checkpoints.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// New WAL frames a pass aims to find: 4096 × 4 KiB = 16 MiB.
const FRAMES_PER_PASS: f64 = 4096.0;

/// Commands committed since the last pass that call a pass before its pace (a command
/// writes a few pages, so this bounds a burst's WAL to some tens of MiB between passes).
const COMMANDS_PER_PASS: u64 = 1024;

/// What the checkpointer and the writer tell each other.
#[derive(Default)]
pub(crate) struct WalSignals {
    /// The WAL should restart from its beginning (set here, done by the writer thread).
    pub restart_wanted: AtomicBool,
    /// The WAL was copied back whole (or restarted): the next commit starts the log over
    /// and syncs its header, an fsync that must not run on a caller's thread. Set here and
    /// by the writer's restart; cleared by the writer thread as it begins a commit.
    pub reset_due: AtomicBool,
    /// Commands committed so far, counted by the writer: a burst calls a pass at once.
    pub commands: AtomicU64,
}

/// WAL frames (pages) after which the writer restarts the log: 8192 × 4 KiB = 32 MiB.
pub(crate) const RESTART_FRAMES: i64 = 8192;

/// Runs a checkpoint; returns (busy flag, frames in the WAL, frames copied back).
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.prepare_cached(&format!("PRAGMA wal_checkpoint({mode})"))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// Until `stop` fires or its sender is dropped (the store is gone).
pub(crate) fn run(conn: Connection, signals: Arc<WalSignals>, stop: Receiver<()>) {
    let (mut due, mut last_frames, mut last_pass, mut last_commands) = (Instant::now(), 0, Instant::now(), 0);
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(MIN_INTERVAL) {
        // A burst after a quiet spell must not wait out a long pace: many commits call a
        // pass at once.
        let commands = signals.commands.load(Ordering::Relaxed);
        if Instant::now() < due && commands < last_commands + COMMANDS_PER_PASS {
            continue;
        }
        last_commands = commands;
        let Some((frames, copied)) = passive(&conn) else {
            continue;
        };
        if frames > 0 && copied == frames {
            signals.reset_due.store(true, Ordering::Release);
        }
        if frames >= RESTART_FRAMES {
            // A second pass copies what was committed during the first, so the
            // writer's restart (which stalls commits) has only a short tail left.
            passive(&conn);
            signals.restart_wanted.store(true, Ordering::Relaxed);
        }
        // Fewer frames than last time: the log started over in between.
        let new = if frames >= last_frames {
            frames - last_frames
        } else {
            frames
        };
        due = Instant::now() + next_wait(new, last_pass.elapsed());
        (last_frames, last_pass) = (frames, Instant::now());
    }
}

/// The wait after a pass that found `new` frames written over `elapsed`.
fn next_wait(new: i64, elapsed: Duration) -> Duration {
    let per_sec = new.max(0) as f64 / elapsed.as_secs_f64().max(1e-3);
    if per_sec * MAX_INTERVAL.as_secs_f64() <= FRAMES_PER_PASS {
        return MAX_INTERVAL;
    }
    Duration::from_secs_f64(FRAMES_PER_PASS / per_sec).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// A passive checkpoint; the frames in the WAL and those copied back, if it ran.
fn passive(conn: &Connection) -> Option<(i64, i64)> {
    match checkpoint(conn, "PASSIVE") {
        Ok((_, frames, copied)) => Some((frames, copied)),
        // Another node's checkpoint is running: it does the same work.
        Err(e) if is_busy(&e) => None,
        Err(e) => {
            tracing::warn!(error = %e, "sqlite passive checkpoint failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_come_as_often_as_the_wal_grows() {
        let second = Duration::from_secs(1);
        assert_eq!(
            next_wait(0, second),
            MAX_INTERVAL,
            "an idle WAL is looked at once a second"
        );
        assert_eq!(next_wait(4_000, second), MAX_INTERVAL);
        assert_eq!(next_wait(8_192, second), Duration::from_millis(500));
        assert_eq!(next_wait(1_000_000, second), MIN_INTERVAL, "flat out: every 100 ms");
        assert_eq!(next_wait(-5, second), MAX_INTERVAL);
    }
}
