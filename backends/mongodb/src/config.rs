//! The `[storage.mongodb]` section.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use confab_sdk::storage::MAX_WRITE_QUEUE;
use serde::{Deserialize, Serialize};

/// Settings of the MongoDB backend (`MONGO_URI` sets `uri` and selects this backend). See `docs/storage-mongodb.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConfig {
    /// `mongodb://` or `mongodb+srv://` connection string (hosts, credentials, replica set).
    pub uri: String,
    pub database: String,
    /// Write concern: `majority`, a number of nodes (`1`), or a custom tag set name.
    /// A write is acknowledged to the client only once MongoDB acknowledged it at this level.
    #[serde(deserialize_with = "string_or_number")]
    pub w: String,
    /// Also wait for the write to reach the on-disk journal (`j: true`).
    pub journal: bool,
    /// Bound on waiting for the write concern, and on finding a server to talk to.
    pub timeout_ms: u64,
    /// Inserts and read-cursor moves run in this many ordered lanes (a pair always uses
    /// the same lane): the most such writes in flight at once.
    pub lanes: usize,
    /// Writes that may wait in all lanes together; beyond that `insert` answers `Busy`.
    pub queue_capacity: usize,
    /// Run on a standalone server (no replica set, so no transactions). A message, its
    /// sequence number and its conversation summary are then three writes that can be
    /// separated by a failure: see `docs/storage-mongodb.md`. Off: such a server is refused.
    pub allow_standalone: bool,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "confab".into(),
            w: "majority".into(),
            journal: true,
            timeout_ms: 10_000,
            lanes: 32,
            queue_capacity: 65536,
            allow_standalone: false,
        }
    }
}

/// `w = 1` and `CONFAB_STORAGE__MONGODB__W=1` (which arrives as a number) mean `"1"`.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct W;
    impl serde::de::Visitor<'_> for W {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("\"majority\", a number of nodes, or a tag set name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            u64::try_from(v)
                .map(|n| n.to_string())
                .map_err(|_| E::custom("expected a number of nodes of 0 or more"))
        }
    }
    d.deserialize_any(W)
}

impl MongoConfig {
    /// Every problem of this section, keys relative to the section.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !(self.uri.starts_with("mongodb://") || self.uri.starts_with("mongodb+srv://")) {
            p.push(ConfigProblem::new(
                "uri",
                "expected a mongodb:// or mongodb+srv:// connection string",
            ));
        }
        // MongoDB refuses these characters in database names.
        let bad = |c: char| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0');
        if self.database.is_empty() || self.database.len() > 63 || self.database.chars().any(bad) {
            p.push(ConfigProblem::new(
                "database",
                "expected 1 to 63 characters without / \\ . space \" or $",
            ));
        }
        if self.w.trim().is_empty() {
            p.push(ConfigProblem::new(
                "w",
                "expected \"majority\", a number of nodes, or a tag set name",
            ));
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            p.push(ConfigProblem::new("timeout_ms", "expected 1 to 600000 milliseconds"));
        }
        if !(1..=1024).contains(&self.lanes) {
            p.push(ConfigProblem::new("lanes", "expected 1 to 1024"));
        }
        if self.queue_capacity < self.lanes {
            p.push(ConfigProblem::new(
                "queue_capacity",
                "expected at least one write per lane",
            ));
        } else if self.queue_capacity > MAX_WRITE_QUEUE {
            p.push(ConfigProblem::new("queue_capacity", "expected at most 16777216"));
        }
        p
    }
}

impl Section for MongoConfig {
    fn validate(&self, _profile: &RunProfile) -> Vec<ConfigProblem> {
        self.problems()
    }
}
