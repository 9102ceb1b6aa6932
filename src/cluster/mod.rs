//! Cluster backends: state shared by every node (sessions, revoked tokens). `local` serves
//! a single node from process memory; a Redis backend serves a cluster. Both must pass
//! the suites in [`contract`].

pub mod local;

/// The shared contract suites for the cluster traits. A backend's tests call them with the
/// store, the clock the store expires by, and a way to move that clock forward: the local
/// backend advances an `OffsetClock`; a Redis backend, whose keys expire in real time,
/// sleeps. Durations are whole seconds with half-second margins so that both work.
#[cfg(test)]
pub mod contract {
    use std::sync::Arc;

    use confab_sdk::clock::SharedClock;
    use confab_sdk::cluster::{RevocationStore, SessionData, SessionStore};
    use confab_sdk::futures_util::future::BoxFuture;

    /// Moves the store's time forward by the given milliseconds.
    pub type Advance = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;

    fn alice() -> SessionData {
        SessionData {
            user_id: "0123456789abcdef01234567".into(),
            username: "alice".into(),
        }
    }

    pub async fn session_store(store: &dyn SessionStore, advance: Advance) {
        // Create, read, delete; ids are fresh and unguessable.
        let a = store.create(alice(), 60, 60).await.unwrap();
        let b = store.create(alice(), 60, 60).await.unwrap();
        assert_ne!(a, b, "every session gets a fresh id");
        assert!(a.len() >= 32, "session ids carry at least 128 bits: {a}");
        assert_eq!(store.get(&a).await.unwrap(), Some(alice()));
        assert_eq!(store.get("no-such-session").await.unwrap(), None);
        store.delete(&a).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert_eq!(
            store.get(&b).await.unwrap(),
            Some(alice()),
            "deleting one session keeps the others"
        );
        store.delete(&a).await.unwrap();
        store.delete("no-such-session").await.unwrap();

        // Idle timeout: each hit extends it.
        let idle = store.create(alice(), 60, 2).await.unwrap();
        advance(1_500).await;
        assert!(
            store.get(&idle).await.unwrap().is_some(),
            "alive within the idle timeout"
        );
        advance(1_500).await;
        assert!(
            store.get(&idle).await.unwrap().is_some(),
            "a hit extends the idle timeout"
        );
        advance(2_500).await;
        assert_eq!(
            store.get(&idle).await.unwrap(),
            None,
            "expired after the idle timeout"
        );

        // Absolute lifetime: hits never extend past it.
        let abs = store.create(alice(), 3, 2).await.unwrap();
        advance(1_500).await;
        assert!(store.get(&abs).await.unwrap().is_some());
        advance(1_000).await;
        assert!(store.get(&abs).await.unwrap().is_some());
        advance(1_000).await;
        assert_eq!(
            store.get(&abs).await.unwrap(),
            None,
            "expired after the absolute lifetime"
        );
    }

    pub async fn revocation_store(
        store: &dyn RevocationStore,
        clock: SharedClock,
        advance: Advance,
    ) {
        let now_secs = || clock.now_millis() / 1000;
        assert!(!store.is_revoked("never").await.unwrap());

        // Remembered until the given time, then forgotten.
        store.revoke("j1", now_secs() + 2).await.unwrap();
        assert!(store.is_revoked("j1").await.unwrap());
        assert!(
            !store.is_revoked("j2").await.unwrap(),
            "only the revoked id"
        );
        advance(3_000).await;
        assert!(
            !store.is_revoked("j1").await.unwrap(),
            "forgotten once the token expired"
        );

        // A deadline in the past stores nothing.
        store.revoke("past", now_secs() - 1).await.unwrap();
        assert!(!store.is_revoked("past").await.unwrap());

        // Revoking again keeps the later deadline.
        store.revoke("twice", now_secs() + 3).await.unwrap();
        store.revoke("twice", now_secs() + 1).await.unwrap();
        advance(1_500).await;
        assert!(
            store.is_revoked("twice").await.unwrap(),
            "the later deadline wins"
        );
        advance(2_500).await;
        assert!(!store.is_revoked("twice").await.unwrap());
    }
}
