//! State records (sessions, revocations, refresh families kept by the storage).

use confab_sdk::storage::StateEntry;

use super::{Stores, now_ms, unique};

pub(crate) async fn state_records(s: Stores) {
    let (kind, other) = (unique("kind"), unique("other"));
    let now = now_ms();
    let later = now + 60_000;
    s.state.put_state(&kind, "a", "one", later).await.expect("put a");
    s.state.put_state(&kind, "b", "two", later).await.expect("put b");
    s.state
        .put_state(&kind, "gone", "old", now - 1)
        .await
        .expect("put an expired record");
    s.state
        .put_state(&other, "a", "elsewhere", later)
        .await
        .expect("put in another kind");
    s.state
        .put_state(&kind, "a", "replaced", later + 1)
        .await
        .expect("replace a");
    s.state.delete_state(&kind, "b").await.expect("delete b");
    s.state
        .delete_state(&kind, "never")
        .await
        .expect("deleting a missing record is fine");
    let mut loaded = s.state.load_state(&kind, now).await.expect("load");
    loaded.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        loaded,
        [StateEntry {
            key: "a".into(),
            value: "replaced".into(),
            expires_ms: later + 1,
        }],
        "the replaced record only: deleted, expired and other kinds' records are not loaded"
    );
    assert!(
        s.state.load_state(&kind, later + 1).await.expect("load").is_empty(),
        "a record is gone at its expiry"
    );
}
