//! Sessions, refresh-token families and revoked token ids.

use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{RefreshStore, RevocationStore, Rotation, SessionData, SessionStore, new_refresh_token};

use super::Advance;

fn alice() -> SessionData {
    SessionData {
        user_id: "0123456789abcdef01234567".into(),
        username: "alice".into(),
        // The contract keeps the login's token with the session.
        token: Some(("0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(), 1_900_000_000)),
        family: Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".into()),
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
    assert_eq!(store.get(&idle).await.unwrap(), None, "expired after the idle timeout");

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

fn next_of(r: Rotation) -> String {
    match r {
        Rotation::Rotated { next, .. } => next,
        other => panic!("expected a rotation, got {other:?}"),
    }
}

/// Rotation, the grace (on `other`, a second node, if given), reuse detection that
/// revokes the family, explicit revocation, and the absolute lifetime.
pub async fn refresh_store(store: &dyn RefreshStore, other: Option<&dyn RefreshStore>, advance: Advance) {
    let other = other.unwrap_or(store);
    let (first, grant) = store.issue("u1", "alice", 60).await.unwrap();
    assert_eq!((grant.user_id.as_str(), grant.username.as_str()), ("u1", "alice"));
    assert!(first.starts_with(&format!("{}.", grant.family)), "{first}");
    let second = match store.rotate(&first, 1).await.unwrap() {
        Rotation::Rotated { next, grant: g } => {
            assert_eq!(g, grant);
            next
        }
        other => panic!("{other:?}"),
    };
    assert_ne!(second, first, "every use rotates");
    // Two tabs at once: within the grace the same successor, from any node.
    assert_eq!(next_of(other.rotate(&first, 1).await.unwrap()), second);
    let third = next_of(other.rotate(&second, 1).await.unwrap());
    assert_eq!(store.rotate("garbage", 1).await.unwrap(), Rotation::Invalid);
    let forged = new_refresh_token(&grant.family);
    assert_eq!(
        store.rotate(&forged, 1).await.unwrap(),
        Rotation::Invalid,
        "an unknown secret"
    );

    // After the grace, the spent token again: theft. The family ends.
    advance(1_500).await;
    assert_eq!(
        store.rotate(&first, 1).await.unwrap(),
        Rotation::Reused {
            family: grant.family.clone(),
            user_id: grant.user_id.clone(),
        }
    );
    assert_eq!(
        other.rotate(&third, 1).await.unwrap(),
        Rotation::Invalid,
        "the family is revoked"
    );

    let (live, g) = store.issue("u2", "bob", 60).await.unwrap();
    store.revoke_family(&g.family).await.unwrap();
    assert_eq!(
        other.rotate(&live, 1).await.unwrap(),
        Rotation::Invalid,
        "revoked explicitly"
    );
    store.revoke_family("no-such-family").await.unwrap();

    let (short, _) = store.issue("u3", "carol", 1).await.unwrap();
    advance(1_500).await;
    assert_eq!(
        store.rotate(&short, 1).await.unwrap(),
        Rotation::Invalid,
        "past the absolute lifetime"
    );
}

pub async fn revocation_store(store: &dyn RevocationStore, clock: SharedClock, advance: Advance) {
    let now_secs = || clock.now_millis() / 1000;
    assert!(!store.is_revoked("never").await.unwrap());

    // Remembered until the given time, then forgotten.
    store.revoke("j1", now_secs() + 2).await.unwrap();
    assert!(store.is_revoked("j1").await.unwrap());
    assert!(!store.is_revoked("j2").await.unwrap(), "only the revoked id");
    assert!(store.any_revoked(&["j2", "j1"]).await.unwrap(), "one of several");
    assert!(!store.any_revoked(&["j2", "j3"]).await.unwrap());
    assert!(!store.any_revoked(&[]).await.unwrap());
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
    assert!(store.is_revoked("twice").await.unwrap(), "the later deadline wins");
    advance(2_500).await;
    assert!(!store.is_revoked("twice").await.unwrap());
}
