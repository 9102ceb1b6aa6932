//! Storage backends behind `confab_sdk::storage`: the embedded SQLite store, and the
//! contract suite every backend must pass.

pub mod contract;
pub mod sqlite;

pub use sqlite::{CommitObserver, SqliteConfig, SqliteStore};
