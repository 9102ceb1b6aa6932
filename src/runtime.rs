//! The async runtime `serve` and `migrate` run on.
//!
//! On a machine with few cores, an idle runtime worker costs more than it gives: every
//! wakeup of one worker (a socket read, a commit answered by SQLite's writer thread) also
//! wakes the other to look for work, so at moderate load the workers spend more time
//! parking and waking than in Confab (BENCHMARKS.md, "Cost per message"). The writer thread
//! needs a core of its own under load anyway, so by default the runtime leaves it one.

use std::thread::available_parallelism;

use tokio::runtime::{Builder, Runtime};

use crate::config::{Config, ServerConfig};
use crate::storage::StorageConfig;

/// `server.worker_threads`, or (0) one per core less the storage backend's busy threads,
/// at least one.
pub fn worker_threads(server: &ServerConfig, storage: &StorageConfig) -> usize {
    match server.worker_threads {
        0 => {
            let cores = available_parallelism().map_or(1, |n| n.get());
            cores.saturating_sub(storage.busy_threads()).max(1)
        }
        n => n,
    }
}

pub fn build(config: &Config) -> Result<Runtime, String> {
    Builder::new_multi_thread()
        .worker_threads(worker_threads(&config.server, &config.storage))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_workers_leave_sqlites_writer_a_core() {
        let cores = available_parallelism().map_or(1, |n| n.get());
        let (mut server, mut storage) = (ServerConfig::default(), StorageConfig::default());
        assert_eq!(worker_threads(&server, &storage), (cores - 1).max(1));
        storage.backend = "mongodb".into();
        assert_eq!(worker_threads(&server, &storage), cores);
        server.worker_threads = 3;
        assert_eq!(worker_threads(&server, &storage), 3);
    }
}
