//! Storage backend selection, the one place the kernel names a storage backend:
//! `[storage] backend` picks SQLite (`backends/sqlite`, always built: the embedded default)
//! or MongoDB (`backends/mongodb`, Cargo feature `mongodb`). Each backend owns its config
//! section; this module only holds them side by side.

use std::path::Path;

use confab_sdk::clock::SharedClock;
use confab_sdk::config::{ConfigProblem, RunProfile, Section, backend_problems};
use confab_sdk::storage::{CommitObserver, StorageError, Stores};
use confab_sqlite::{SqliteConfig, SqliteStore};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite` (embedded, the default) or `mongodb`.
    pub backend: String,
    pub sqlite: SqliteConfig,
    #[cfg(feature = "mongodb")]
    pub mongodb: confab_mongodb::MongoConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "sqlite".into(),
            sqlite: SqliteConfig::default(),
            #[cfg(feature = "mongodb")]
            mongodb: Default::default(),
        }
    }
}

/// The backends this build can open.
const BACKENDS: &[&str] = &[
    "sqlite",
    #[cfg(feature = "mongodb")]
    "mongodb",
];

impl Section for StorageConfig {
    fn validate(&self, profile: &RunProfile) -> Vec<ConfigProblem> {
        let sections = [
            ("sqlite", self.sqlite.validate(profile)),
            #[cfg(feature = "mongodb")]
            ("mongodb", self.mongodb.validate(profile)),
        ];
        backend_problems(&self.backend, BACKENDS, sections)
    }
}

impl StorageConfig {
    /// Threads of its own the backend keeps busy under load, which the async runtime leaves
    /// a core to: SQLite's writer (its checkpointer is mostly idle); MongoDB's driver runs
    /// on the runtime.
    pub fn busy_threads(&self) -> usize {
        match self.backend.as_str() {
            "sqlite" => 1,
            _ => 0,
        }
    }

    /// What `/ready` and the boot log call the selected backend's location.
    pub fn describe(&self) -> String {
        match self.backend.as_str() {
            #[cfg(feature = "mongodb")]
            "mongodb" => format!("mongodb database {:?}", self.mongodb.database),
            _ => format!("sqlite at {:?}", self.sqlite.path),
        }
    }
}

/// Opens the configured backend (migrating its schema); `observer` hears each commit of a
/// backend that groups them.
pub async fn open(cfg: &StorageConfig, clock: SharedClock, observer: CommitObserver) -> Result<Stores, StorageError> {
    match cfg.backend.as_str() {
        #[cfg(feature = "mongodb")]
        "mongodb" => Ok(Stores::of(confab_mongodb::MongoStore::open(&cfg.mongodb, clock).await?)),
        _ => Ok(Stores::of(SqliteStore::open(&cfg.sqlite, clock, Some(observer)).await?)),
    }
}

/// An SQLite store at `path` with the configured settings otherwise, whatever the backend
/// (the API documents are built against one without serving).
pub async fn open_throwaway(cfg: &StorageConfig, path: &Path, clock: SharedClock) -> Result<Stores, StorageError> {
    let sqlite = SqliteConfig {
        path: path.to_string_lossy().into_owned(),
        ..cfg.sqlite.clone()
    };
    Ok(Stores::of(SqliteStore::open(&sqlite, clock, None).await?))
}

/// `confab migrate`: brings the old Express backend's MongoDB database (`storage.mongodb`)
/// up to date in place; the report, one line each.
pub async fn migrate(cfg: &StorageConfig) -> Result<Vec<String>, String> {
    #[cfg(feature = "mongodb")]
    {
        println!("migrating mongodb database {:?}", cfg.mongodb.database);
        confab_mongodb::migrate::run(&cfg.mongodb)
            .await
            .map(|r| r.lines())
            .map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = cfg;
        Err("this build has no mongodb backend (Cargo feature `mongodb`)".into())
    }
}
