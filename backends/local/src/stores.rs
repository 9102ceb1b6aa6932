//! In-process cluster services for a single node: sessions, revoked token ids and presence
//! kept in memory, expired by the clock service.
//!
//! Memory stays bounded without a background task (`confab_sdk::memory`). Sessions and
//! revocations are also kept in the storage ([`Persist`]), so a restart forgets no logout.

use std::collections::HashMap;
use std::sync::Mutex;

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{PresenceState, PresenceStore, RevocationStore, SessionData, SessionStore};
use confab_sdk::ids::random_token;
use confab_sdk::storage::{SharedStateStore, StorageResult};
use confab_sdk::time::from_millis;
use serde::{Deserialize, Serialize};

use confab_sdk::memory::{Expiring, MemoryRevocationStore, lock};

use crate::persist::{self, Persist};

/// A session as kept in memory and, with persistence, in the storage.
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    user_id: String,
    username: String,
    token: Option<(String, i64)>,
    family: Option<String>,
    absolute_deadline_ms: i64,
    idle_deadline_ms: i64,
    idle_ms: i64,
    /// The idle deadline the storage holds: a hit writes it again only once the deadline
    /// has moved by a quarter of the idle timeout (after a restart a session may thus end
    /// up to that much early, never late).
    #[serde(skip)]
    stored_idle_deadline_ms: i64,
}

impl Session {
    fn live_at(&self, now_ms: i64) -> bool {
        now_ms < self.expires_ms()
    }

    fn expires_ms(&self) -> i64 {
        self.idle_deadline_ms.min(self.absolute_deadline_ms)
    }

    fn data(&self) -> SessionData {
        SessionData {
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            token: self.token.clone(),
            family: self.family.clone(),
        }
    }
}

/// Sessions in process memory, for a single node; with [`Persist`], also kept in the
/// storage and restored at boot.
pub struct LocalSessionStore {
    clock: SharedClock,
    inner: Mutex<Expiring<Session>>,
    persist: Option<Persist>,
}

impl LocalSessionStore {
    pub fn new(clock: SharedClock) -> Self {
        let now = clock.now_millis();
        LocalSessionStore {
            clock,
            inner: Mutex::new(Expiring::new(now)),
            persist: None,
        }
    }

    /// A store kept in `state`, holding the live sessions `state` already has.
    pub async fn restore(clock: SharedClock, state: SharedStateStore) -> StorageResult<Self> {
        let persist = Persist::new(state, "session");
        let now = clock.now_millis();
        let mut inner = Expiring::new(now);
        for (id, mut session) in persist.load::<Session>(now).await? {
            session.stored_idle_deadline_ms = session.idle_deadline_ms;
            inner.map.insert(id, session);
        }
        Ok(LocalSessionStore {
            clock,
            inner: Mutex::new(inner),
            persist: Some(persist),
        })
    }

    /// Entries held, live or not yet swept (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes a session's moved idle deadline to the storage, unless it was deleted
    /// meanwhile. A failure only costs idle time after a restart: logged, not answered.
    async fn store_touch(&self, p: &Persist, id: &str) {
        let _order = p.order().await;
        let Some(session) = lock(&self.inner).map.get(id).cloned() else {
            return;
        };
        match p.put(id, &session, session.expires_ms()).await {
            Ok(()) => {
                if let Some(s) = lock(&self.inner).map.get_mut(id) {
                    s.stored_idle_deadline_ms = session.idle_deadline_ms;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not store a session's idle deadline"),
        }
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

#[async_trait]
impl SessionStore for LocalSessionStore {
    async fn create(&self, data: SessionData, absolute_secs: u64, idle_secs: u64) -> StorageResult<String> {
        let _order = persist::order(&self.persist).await;
        let now = self.clock.now_millis();
        let idle_ms = secs_to_ms(idle_secs);
        let absolute_deadline_ms = now.saturating_add(secs_to_ms(absolute_secs));
        let idle_deadline_ms = now.saturating_add(idle_ms).min(absolute_deadline_ms);
        let session = Session {
            user_id: data.user_id,
            username: data.username,
            token: data.token,
            family: data.family,
            absolute_deadline_ms,
            idle_deadline_ms,
            idle_ms,
            stored_idle_deadline_ms: idle_deadline_ms,
        };
        // 128 random bits: a collision is practically impossible, but never overwrite one.
        let id = loop {
            let id = random_token();
            if !lock(&self.inner).map.contains_key(&id) {
                break id;
            }
        };
        if let Some(p) = &self.persist {
            p.put(&id, &session, session.expires_ms()).await?;
        }
        let mut inner = lock(&self.inner);
        inner.maybe_sweep(now, |s| s.live_at(now));
        inner.map.insert(id.clone(), session);
        Ok(id)
    }

    async fn get(&self, id: &str) -> StorageResult<Option<SessionData>> {
        let now = self.clock.now_millis();
        let (data, touched) = {
            let mut inner = lock(&self.inner);
            let Some(session) = inner.map.get_mut(id) else {
                return Ok(None);
            };
            if !session.live_at(now) {
                inner.map.remove(id);
                return Ok(None);
            }
            session.idle_deadline_ms = now.saturating_add(session.idle_ms).min(session.absolute_deadline_ms);
            let moved = session.idle_deadline_ms - session.stored_idle_deadline_ms;
            (session.data(), moved > session.idle_ms / 4)
        };
        if let Some(p) = self.persist.as_ref().filter(|_| touched) {
            self.store_touch(p, id).await;
        }
        Ok(Some(data))
    }

    async fn delete(&self, id: &str) -> StorageResult<()> {
        let _order = persist::order(&self.persist).await;
        if let Some(p) = &self.persist {
            p.delete(id).await?;
        }
        lock(&self.inner).map.remove(id);
        Ok(())
    }
}

/// Revoked token ids in process memory, for a single node, also kept in the storage and
/// restored at boot.
pub struct LocalRevocationStore {
    clock: SharedClock,
    inner: MemoryRevocationStore,
    persist: Persist,
}

impl LocalRevocationStore {
    /// A store kept in `state`, holding the revocations `state` already has.
    pub async fn restore(clock: SharedClock, state: SharedStateStore) -> StorageResult<Self> {
        let persist = Persist::new(state, "revoked");
        let inner = MemoryRevocationStore::new(clock.clone());
        for (jti, until_ms) in persist.load::<i64>(clock.now_millis()).await? {
            inner.restore(jti, until_ms);
        }
        Ok(LocalRevocationStore { clock, inner, persist })
    }

    /// Entries held, live or not yet swept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RevocationStore for LocalRevocationStore {
    async fn revoke(&self, jti: &str, until_unix_secs: i64) -> StorageResult<()> {
        let _order = self.persist.order().await;
        let until_ms = until_unix_secs.saturating_mul(1000);
        if until_ms <= self.clock.now_millis() || self.inner.holds(jti, until_ms) {
            return Ok(());
        }
        self.persist.put(jti, &until_ms, until_ms).await?;
        self.inner.revoke(jti, until_unix_secs).await
    }

    async fn is_revoked(&self, jti: &str) -> StorageResult<bool> {
        self.inner.is_revoked(jti).await
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
    use confab_contract::cluster as contract;
    use confab_sdk::memory::{MIN_SWEEP_LEN, SWEEP_INTERVAL_MS};

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
        let store = MemoryRevocationStore::new(c.clone());
        contract::revocation_store(&store, c.clone(), advancer(&c)).await;
    }

    #[tokio::test]
    async fn refresh_store_passes_the_contract() {
        let c = clock();
        let store = crate::refresh::LocalRefreshStore::new(c.clone());
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
        let store = MemoryRevocationStore::new(c.clone());
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
        let store = MemoryRevocationStore::new(c.clone());
        store.revoke("old", c.now_millis() / 1000 - 1).await.unwrap();
        assert!(store.is_empty());
        assert!(!store.is_revoked("old").await.unwrap());
    }

    /// The three stores kept in the storage: what they hold comes back when they are built
    /// again over the same records (a restart). The records' own storage is the storage
    /// backends' contract (`confab_contract::storage::state`).
    #[tokio::test]
    async fn stores_kept_in_the_storage_survive_a_restart() {
        use confab_sdk::cluster::{RefreshStore, Rotation};

        use crate::refresh::LocalRefreshStore;

        let state: SharedStateStore = Arc::new(confab_contract::fakes::MemState::default());
        let c = clock();
        let open = || async {
            let state = state.clone();
            let sessions = LocalSessionStore::restore(c.clone(), state.clone())
                .await
                .expect("sessions");
            let revoked = LocalRevocationStore::restore(c.clone(), state.clone())
                .await
                .expect("revocations");
            let refresh = LocalRefreshStore::restore(c.clone(), state).await.expect("refresh");
            (sessions, revoked, refresh)
        };

        let (sessions, revoked, refresh) = open().await;
        let kept = sessions.create(data(1), 3600, 4).await.expect("create");
        let ended = sessions.create(data(2), 3600, 600).await.expect("create");
        sessions.delete(&ended).await.expect("delete");
        // Used 2 s later: the idle deadline moved by half the timeout and is stored again.
        c.advance(2_000);
        assert!(sessions.get(&kept).await.expect("get").is_some());
        let now_secs = c.now_millis() / 1000;
        revoked.revoke("logged-out", now_secs + 100).await.expect("revoke");
        let (first, _) = refresh.issue("u1", "user1", 3600).await.expect("issue");
        let Rotation::Rotated { next, .. } = refresh.rotate(&first, 1).await.expect("rotate") else {
            panic!("a fresh refresh token rotates");
        };
        let (other, grant) = refresh.issue("u2", "user2", 3600).await.expect("issue");
        refresh.revoke_family(&grant.family).await.expect("revoke_family");

        // 3 s after the last use: past the first idle deadline, not the stored second one.
        c.advance(3_000);
        let (sessions, revoked, refresh) = open().await;
        assert_eq!(
            sessions.get(&kept).await.expect("get"),
            Some(data(1)),
            "a live session is kept"
        );
        assert_eq!(
            sessions.get(&ended).await.expect("get"),
            None,
            "a deleted session stays deleted"
        );
        assert!(
            revoked.is_revoked("logged-out").await.expect("is_revoked"),
            "a revocation is kept"
        );
        assert!(!revoked.is_revoked("other").await.expect("is_revoked"));
        assert_eq!(
            refresh.rotate(&other, 1).await.expect("rotate"),
            Rotation::Invalid,
            "a revoked family stays revoked"
        );
        assert!(
            matches!(
                refresh.rotate(&first, 1).await.expect("rotate"),
                Rotation::Reused { .. }
            ),
            "a token spent before the restart, presented again after its grace, is a reuse"
        );
        assert_eq!(
            refresh.rotate(&next, 1).await.expect("rotate"),
            Rotation::Invalid,
            "the reuse revoked the family for good"
        );

        let (sessions, _, _) = open().await;
        c.advance(5_000);
        assert_eq!(
            sessions.get(&kept).await.expect("get"),
            None,
            "an idle session still expires"
        );
    }
}
