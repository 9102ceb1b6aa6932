//! The `[storage.sqlite]`-style configuration section of the SQLite backend.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use confab_sdk::storage::MAX_WRITE_QUEUE;
use serde::{Deserialize, Serialize};

/// Settings of the embedded SQLite store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// The database file; its parent directories are created at boot.
    pub path: String,
    /// How long a connection waits for another process's lock before giving up.
    pub busy_timeout_ms: u64,
    /// Most write commands committed together in one transaction.
    pub max_batch: usize,
    /// Longest time, in microseconds, a small batch waits for more writes to join it
    /// before it commits, when the recent write rate says some will come (0, the default:
    /// never; docs/storage.md says when it pays).
    pub linger_us: u64,
    /// Write commands that may wait for the writer; beyond that `insert` answers `Busy`.
    pub queue_capacity: usize,
    /// Read-only connections serving history, sync, conversations and lookups.
    pub readers: usize,
    /// `normal` (default): with WAL, a commit survives a crash or kill of the process;
    /// the last commits may be lost if the machine itself loses power. `full`: every
    /// commit is also fsynced, so it survives power loss, at one fsync per batch.
    pub synchronous: String,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: "data/confab.db".into(),
            busy_timeout_ms: 5000,
            max_batch: 512,
            linger_us: 0,
            queue_capacity: 65536,
            readers: 4,
            synchronous: "normal".into(),
        }
    }
}

impl SqliteConfig {
    /// The `PRAGMA synchronous` value, once validated.
    pub(crate) fn synchronous_pragma(&self) -> Option<&'static str> {
        match self.synchronous.to_ascii_lowercase().as_str() {
            "normal" => Some("NORMAL"),
            "full" => Some("FULL"),
            _ => None,
        }
    }

    /// Every problem of this section, keys relative to the section.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: &str| {
            problems.push(ConfigProblem {
                key: key.into(),
                message: message.into(),
            });
        };
        if self.path.trim().is_empty() {
            problem("path", "must name a database file");
        }
        if self.busy_timeout_ms == 0 {
            problem(
                "busy_timeout_ms",
                "must be at least 1 (several nodes may share the file)",
            );
        }
        // Upper bounds: each is allocated up front (a batch buffer, a channel, connections).
        if !(1..=65_536).contains(&self.max_batch) {
            problem("max_batch", "must be 1 to 65536");
        }
        if self.linger_us > 100_000 {
            problem("linger_us", "must be 0 to 100000 (100 ms)");
        }
        if !(1..=MAX_WRITE_QUEUE).contains(&self.queue_capacity) {
            problem("queue_capacity", "must be 1 to 16777216");
        }
        if !(1..=256).contains(&self.readers) {
            problem("readers", "must be 1 to 256");
        }
        if self.synchronous_pragma().is_none() {
            problem("synchronous", "must be \"normal\" or \"full\"");
        }
        problems
    }
}

impl Section for SqliteConfig {
    fn validate(&self, _profile: &RunProfile) -> Vec<ConfigProblem> {
        self.problems()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_sdk::config::parse_section;
    use serde_json::json;

    fn profile() -> RunProfile {
        RunProfile {
            name: "development".into(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let cfg: SqliteConfig = parse_section("storage.sqlite", &json!({}), &profile()).unwrap();
        assert_eq!(cfg.path, "data/confab.db");
        assert_eq!(cfg.synchronous_pragma(), Some("NORMAL"));
    }

    #[test]
    fn reports_zero_values_and_unknown_synchronous_by_key() {
        let given =
            json!({"max_batch": 0, "readers": 0, "synchronous": "off", "queue_capacity": 0, "busy_timeout_ms": 0});
        let problems = parse_section::<SqliteConfig>("storage.sqlite", &given, &profile()).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "storage.sqlite.busy_timeout_ms",
                "storage.sqlite.max_batch",
                "storage.sqlite.queue_capacity",
                "storage.sqlite.readers",
                "storage.sqlite.synchronous"
            ]
        );
        let err = parse_section::<SqliteConfig>("s", &json!({"batch": 3}), &profile()).unwrap_err();
        assert!(err[0].message.contains("unknown key"), "{err:?}");
    }
}
