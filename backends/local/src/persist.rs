//! Where the in-process cluster stores keep their records across restarts: the storage's
//! [`StateStore`]. A store writes through before it changes its memory, under its own
//! order lock, so the storage sees the store's writes in the order they were decided (a
//! session touched and deleted at once must not come back after a restart).

use confab_sdk::storage::{SharedStateStore, StorageResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, MutexGuard};

pub struct Persist {
    state: SharedStateStore,
    kind: &'static str,
    order: Mutex<()>,
}

impl Persist {
    pub fn new(state: SharedStateStore, kind: &'static str) -> Self {
        Persist {
            state,
            kind,
            order: Mutex::new(()),
        }
    }

    /// Held from the decision to write until the write is done.
    pub async fn order(&self) -> MutexGuard<'_, ()> {
        self.order.lock().await
    }

    pub async fn put(&self, key: &str, value: &impl Serialize, expires_ms: i64) -> StorageResult<()> {
        let value = serde_json::to_string(value).expect("state records serialize");
        self.state.put_state(self.kind, key, &value, expires_ms).await
    }

    pub async fn delete(&self, key: &str) -> StorageResult<()> {
        self.state.delete_state(self.kind, key).await
    }

    /// The live records; one that no longer parses (written by another release) is
    /// skipped with a warning rather than stopping the boot.
    pub async fn load<T: DeserializeOwned>(&self, now_ms: i64) -> StorageResult<Vec<(String, T)>> {
        let entries = self.state.load_state(self.kind, now_ms).await?;
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            match serde_json::from_str(&e.value) {
                Ok(v) => records.push((e.key, v)),
                Err(err) => {
                    tracing::warn!(kind = self.kind, key = %e.key, error = %err, "skipped an unreadable state record")
                }
            }
        }
        Ok(records)
    }
}

/// Unwraps an optional order lock: stores without persistence need no order.
pub async fn order(p: &Option<Persist>) -> Option<MutexGuard<'_, ()>> {
    match p {
        Some(p) => Some(p.order().await),
        None => None,
    }
}
