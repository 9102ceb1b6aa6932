//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the committing call, so every thousand
//! pages one unlucky batch would also copy the WAL back into the database and fsync it.
//! Instead the writer never checkpoints on its own: this thread copies committed frames
//! back with PASSIVE checkpoints (which never block the writer), and when the WAL has
//! grown past a bound it asks the writer to restart it between two batches — by then
//! only the short tail the last passive pass missed is left to copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use crate::rows::is_busy;

const INTERVAL: Duration = Duration::from_millis(100);

/// WAL frames (pages) after which the writer restarts the log: 8192 × 4 KiB = 32 MiB.
pub(crate) const RESTART_FRAMES: i64 = 8192;

/// Runs a checkpoint; returns (busy flag, frames in the WAL, frames copied back).
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// Until `stop` fires or its sender is dropped (the store is gone).
pub(crate) fn run(conn: Connection, restart_wanted: Arc<AtomicBool>, stop: Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(INTERVAL) {
        match passive(&conn) {
            Some(frames) if frames >= RESTART_FRAMES => {
                // A second pass copies what was committed during the first, so the
                // writer's restart (which stalls commits) has only a short tail left.
                passive(&conn);
                restart_wanted.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// A passive checkpoint; the number of frames in the WAL, if it ran.
fn passive(conn: &Connection) -> Option<i64> {
    match checkpoint(conn, "PASSIVE") {
        Ok((_, frames, _)) => Some(frames),
        // Another node's checkpoint is running: it does the same work.
        Err(e) if is_busy(&e) => None,
        Err(e) => {
            tracing::warn!(error = %e, "sqlite passive checkpoint failed");
            None
        }
    }
}
