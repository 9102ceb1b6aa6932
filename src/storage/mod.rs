//! Storage backends behind `confab_sdk::storage`: the embedded SQLite store, the MongoDB
//! store, and the contract suite every backend must pass.

pub mod contract;
pub mod mongo;
pub mod sqlite;

pub use mongo::MongoStore;
pub use sqlite::{CommitObserver, MAX_QUEUE, SqliteConfig, SqliteStore};
