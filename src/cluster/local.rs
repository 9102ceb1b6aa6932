//! In-process cluster services for a single node: sessions, revoked token ids and presence
//! kept in memory, expired by the clock service.
//!
//! Memory stays bounded without a background task: every write may sweep. A sweep runs
//! when [`SWEEP_INTERVAL_MS`] of clock time has passed since the last one, or when the map
//! has doubled since then (so a burst of short-lived entries is collected in amortized
//! O(1) per write). Reads drop the expired entry they hit.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{PresenceState, PresenceStore, RevocationStore, SessionData, SessionStore};
use confab_sdk::ids::random_token;
use confab_sdk::storage::StorageResult;
use confab_sdk::time::from_millis;

/// Clock time between two sweeps triggered by time alone.
pub const SWEEP_INTERVAL_MS: i64 = 60_000;
/// Below this many entries, growth alone never triggers a sweep.
const MIN_SWEEP_LEN: usize = 1024;

/// Entries with an expiry, and when to sweep them next.
struct Expiring<V> {
    map: HashMap<String, V>,
    next_sweep_ms: i64,
    sweep_at_len: usize,
}

impl<V> Expiring<V> {
    fn new(now_ms: i64) -> Self {
        Expiring {
            map: HashMap::new(),
            next_sweep_ms: now_ms + SWEEP_INTERVAL_MS,
            sweep_at_len: MIN_SWEEP_LEN,
        }
    }

    /// Drops every entry `live` rejects, if a sweep is due.
    fn maybe_sweep(&mut self, now_ms: i64, live: impl Fn(&V) -> bool) {
        if now_ms < self.next_sweep_ms && self.map.len() < self.sweep_at_len {
            return;
        }
        self.map.retain(|_, v| live(v));
        self.next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
        self.sweep_at_len = (self.map.len() * 2).max(MIN_SWEEP_LEN);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is a single insert
    // or remove, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Session {
    data: SessionData,
    absolute_deadline_ms: i64,
    idle_deadline_ms: i64,
    idle_ms: i64,
}

impl Session {
    fn live_at(&self, now_ms: i64) -> bool {
        now_ms < self.idle_deadline_ms && now_ms < self.absolute_deadline_ms
    }
}

/// Sessions in process memory, for a single node.
pub struct LocalSessionStore {
    clock: SharedClock,
    inner: Mutex<Expiring<Session>>,
}

impl LocalSessionStore {
    pub fn new(clock: SharedClock) -> Self {
        let now = clock.now_millis();
        LocalSessionStore {
            clock,
            inner: Mutex::new(Expiring::new(now)),
        }
    }

    /// Entries held, live or not yet swept (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

#[async_trait]
impl SessionStore for LocalSessionStore {
    async fn create(&self, data: SessionData, absolute_secs: u64, idle_secs: u64) -> StorageResult<String> {
        let now = self.clock.now_millis();
        let idle_ms = secs_to_ms(idle_secs);
        let absolute_deadline_ms = now.saturating_add(secs_to_ms(absolute_secs));
        let session = Session {
            data,
            absolute_deadline_ms,
            idle_deadline_ms: now.saturating_add(idle_ms).min(absolute_deadline_ms),
            idle_ms,
        };
        let mut inner = lock(&self.inner);
        inner.maybe_sweep(now, |s| s.live_at(now));
        // 128 random bits: a collision is practically impossible, but never overwrite one.
        let id = loop {
            let id = random_token();
            if !inner.map.contains_key(&id) {
                break id;
            }
        };
        inner.map.insert(id.clone(), session);
        Ok(id)
    }

    async fn get(&self, id: &str) -> StorageResult<Option<SessionData>> {
        let now = self.clock.now_millis();
        let mut inner = lock(&self.inner);
        let Some(session) = inner.map.get_mut(id) else {
            return Ok(None);
        };
        if !session.live_at(now) {
            inner.map.remove(id);
            return Ok(None);
        }
        session.idle_deadline_ms = now.saturating_add(session.idle_ms).min(session.absolute_deadline_ms);
        Ok(Some(session.data.clone()))
    }

    async fn delete(&self, id: &str) -> StorageResult<()> {
        lock(&self.inner).map.remove(id);
        Ok(())
    }
}

/// Revoked token ids in process memory, for a single node.
pub struct LocalRevocationStore {
    clock: SharedClock,
    /// jti -> revoked until (unix milliseconds).
    inner: Mutex<Expiring<i64>>,
}

impl LocalRevocationStore {
    pub fn new(clock: SharedClock) -> Self {
        let now = clock.now_millis();
        LocalRevocationStore {
            clock,
            inner: Mutex::new(Expiring::new(now)),
        }
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
impl RevocationStore for LocalRevocationStore {
    async fn revoke(&self, jti: &str, until_unix_secs: i64) -> StorageResult<()> {
        let now = self.clock.now_millis();
        let until_ms = until_unix_secs.saturating_mul(1000);
        let mut inner = lock(&self.inner);
        inner.maybe_sweep(now, |until| now < *until);
        if until_ms <= now {
            // The token has expired already: nothing to remember.
            return Ok(());
        }
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

/// Presence in process memory: one node is the whole cluster, so there is nothing to
/// heart-beat or expire. `lastSeen` is kept per user that ever connected (a few bytes each).
pub struct LocalPresenceStore {
    clock: SharedClock,
    inner: Mutex<LocalPresence>,
}

#[derive(Default)]
struct LocalPresence {
    sockets: HashMap<String, u32>,
    last_seen_ms: HashMap<String, i64>,
}

impl LocalPresenceStore {
    pub fn new(clock: SharedClock) -> Self {
        LocalPresenceStore {
            clock,
            inner: Mutex::default(),
        }
    }
}

#[async_trait]
impl PresenceStore for LocalPresenceStore {
    async fn connected(&self, user_id: &str) -> StorageResult<Option<PresenceState>> {
        let mut inner = lock(&self.inner);
        let n = inner.sockets.entry(user_id.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            return Ok(None);
        }
        let seen = inner.last_seen_ms.get(user_id).copied().map(from_millis);
        Ok(Some(PresenceState::online(user_id, seen)))
    }

    async fn disconnected(&self, user_id: &str) -> StorageResult<Option<PresenceState>> {
        let mut inner = lock(&self.inner);
        match inner.sockets.get_mut(user_id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(None)
            }
            Some(_) => {
                inner.sockets.remove(user_id);
                let now = self.clock.now_millis();
                inner.last_seen_ms.insert(user_id.to_owned(), now);
                Ok(Some(PresenceState::offline(user_id, Some(from_millis(now)))))
            }
            None => Ok(None),
        }
    }

    async fn states(&self, user_ids: &[String]) -> StorageResult<Vec<PresenceState>> {
        let inner = lock(&self.inner);
        Ok(user_ids
            .iter()
            .map(|u| PresenceState {
                user_id: u.clone(),
                online: inner.sockets.contains_key(u),
                last_seen: inner.last_seen_ms.get(u).copied().map(from_millis),
            })
            .collect())
    }

    fn sweep_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn sweep(&self) -> StorageResult<Vec<PresenceState>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confab_sdk::clock::{Clock, OffsetClock};
    use confab_sdk::futures_util::FutureExt;

    use super::*;
    use crate::cluster::contract;

    fn clock() -> Arc<OffsetClock> {
        Arc::new(OffsetClock::new(0))
    }

    fn advancer(c: &Arc<OffsetClock>) -> contract::Advance {
        let c = c.clone();
        Arc::new(move |ms| {
            c.advance(ms as i64);
            async {}.boxed()
        })
    }

    #[tokio::test]
    async fn session_store_passes_the_contract() {
        let c = clock();
        let store = LocalSessionStore::new(c.clone());
        contract::session_store(&store, advancer(&c)).await;
    }

    #[tokio::test]
    async fn presence_store_passes_the_contract() {
        let c = clock();
        let store = LocalPresenceStore::new(c.clone());
        contract::presence_store(&store, None, c).await;
    }

    #[tokio::test]
    async fn revocation_store_passes_the_contract() {
        let c = clock();
        let store = LocalRevocationStore::new(c.clone());
        contract::revocation_store(&store, c.clone(), advancer(&c)).await;
    }

    #[tokio::test]
    async fn refresh_store_passes_the_contract() {
        let c = clock();
        let store = crate::cluster::refresh_local::LocalRefreshStore::new(c.clone());
        contract::refresh_store(&store, None, advancer(&c)).await;
    }

    fn data(n: usize) -> SessionData {
        SessionData {
            user_id: format!("u{n}"),
            username: format!("user{n}"),
            token: None,
            family: None,
        }
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_on_growth() {
        let c = clock();
        let store = LocalSessionStore::new(c.clone());
        for round in 0..10 {
            for n in 0..1000 {
                store.create(data(n), 60, 1).await.unwrap();
            }
            c.advance(2_000);
            // Everything created so far is expired; the map never holds much more than
            // one round's worth plus the doubling slack.
            assert!(
                store.len() <= 2 * MIN_SWEEP_LEN + 1000,
                "round {round}: {}",
                store.len()
            );
        }
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_by_time() {
        let c = clock();
        let store = LocalSessionStore::new(c.clone());
        for n in 0..100 {
            store.create(data(n), 60, 1).await.unwrap();
        }
        assert_eq!(store.len(), 100);
        c.advance(SWEEP_INTERVAL_MS);
        let live = store.create(data(0), 60, 1).await.unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&live).await.unwrap(), Some(data(0)));
    }

    #[tokio::test]
    async fn revocations_are_swept_by_time_and_growth() {
        let c = clock();
        let store = LocalRevocationStore::new(c.clone());
        let now_secs = c.now_millis() / 1000;
        for n in 0..5000 {
            store.revoke(&format!("j{n}"), now_secs + 2).await.unwrap();
            if n % 1000 == 999 {
                c.advance(3_000);
            }
        }
        assert!(store.len() <= 2 * MIN_SWEEP_LEN, "{}", store.len());
        c.advance(SWEEP_INTERVAL_MS);
        store.revoke("last", c.now_millis() / 1000 + 10).await.unwrap();
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn revoking_an_expired_token_stores_nothing() {
        let c = clock();
        let store = LocalRevocationStore::new(c.clone());
        store.revoke("old", c.now_millis() / 1000 - 1).await.unwrap();
        assert!(store.is_empty());
        assert!(!store.is_revoked("old").await.unwrap());
    }
}
