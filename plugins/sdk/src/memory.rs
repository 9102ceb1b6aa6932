//! Maps in process memory that expire by the clock service, for the in-process cluster
//! backend and for the Redis backend's own copy of the revocations it made.
//!
//! Memory stays bounded without a background task: every write may sweep. A sweep runs
//! when [`SWEEP_INTERVAL_MS`] of clock time has passed since the last one, or when the map
//! has doubled since then (so a burst of short-lived entries is collected in amortized
//! O(1) per write). Reads drop the expired entry they hit.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::clock::SharedClock;
use crate::cluster::RevocationStore;
use crate::storage::StorageResult;

/// Clock time between two sweeps triggered by time alone.
pub const SWEEP_INTERVAL_MS: i64 = 60_000;
/// Below this many entries, growth alone never triggers a sweep.
pub const MIN_SWEEP_LEN: usize = 1024;

/// Entries with an expiry, and when to sweep them next.
pub struct Expiring<V> {
    pub map: HashMap<String, V>,
    next_sweep_ms: i64,
    sweep_at_len: usize,
}

impl<V> Expiring<V> {
    pub fn new(now_ms: i64) -> Self {
        Expiring {
            map: HashMap::new(),
            next_sweep_ms: now_ms + SWEEP_INTERVAL_MS,
            sweep_at_len: MIN_SWEEP_LEN,
        }
    }

    /// Drops every entry `live` rejects, if a sweep is due.
    pub fn maybe_sweep(&mut self, now_ms: i64, live: impl Fn(&V) -> bool) {
        if now_ms < self.next_sweep_ms && self.map.len() < self.sweep_at_len {
            return;
        }
        self.map.retain(|_, v| live(v));
        self.next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
        self.sweep_at_len = (self.map.len() * 2).max(MIN_SWEEP_LEN);
    }
}

/// Locks a map of this module's kind.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is a single insert
    // or remove, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Revoked token ids in process memory.
pub struct MemoryRevocationStore {
    clock: SharedClock,
    /// jti -> revoked until (unix milliseconds).
    inner: Mutex<Expiring<i64>>,
}

impl MemoryRevocationStore {
    pub fn new(clock: SharedClock) -> Self {
        let now = clock.now_millis();
        MemoryRevocationStore {
            clock,
            inner: Mutex::new(Expiring::new(now)),
        }
    }

    /// Takes a revocation read back from elsewhere (a store restored at boot).
    pub fn restore(&self, jti: String, until_ms: i64) {
        lock(&self.inner).map.insert(jti, until_ms);
    }

    /// Whether `jti` is held revoked until `until_ms` or later already.
    pub fn holds(&self, jti: &str, until_ms: i64) -> bool {
        lock(&self.inner).map.get(jti).is_some_and(|held| *held >= until_ms)
    }

    /// Entries held, live or not yet swept (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RevocationStore for MemoryRevocationStore {
    async fn revoke(&self, jti: &str, until_unix_secs: i64) -> StorageResult<()> {
        let now = self.clock.now_millis();
        let until_ms = until_unix_secs.saturating_mul(1000);
        if until_ms <= now {
            // The token has expired already: nothing to remember.
            return Ok(());
        }
        let mut inner = lock(&self.inner);
        inner.maybe_sweep(now, |until| now < *until);
        // Revoking twice keeps the later deadline.
        let entry = inner.map.entry(jti.to_owned()).or_insert(until_ms);
        *entry = (*entry).max(until_ms);
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> StorageResult<bool> {
        let now = self.clock.now_millis();
        let mut inner = lock(&self.inner);
        match inner.map.get(jti) {
            Some(until) if now < *until => Ok(true),
            Some(_) => {
                inner.map.remove(jti);
                Ok(false)
            }
            None => Ok(false),
        }
    }
}
