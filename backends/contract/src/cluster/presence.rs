//! Presence, on one node or two sharing one state.

use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{PresenceState, PresenceStore};

fn near(at: Option<confab_sdk::time::Timestamp>, ms: i64) -> bool {
    at.is_some_and(|t| (t.timestamp_millis() - ms).abs() < 2_000)
}

/// `a` and, when the backend has more than one node, `b`: two nodes sharing one state.
pub async fn presence_store(a: &dyn PresenceStore, b: Option<&dyn PresenceStore>, clock: SharedClock) {
    let alice = "a1a1a1a1a1a1a1a1a1a1a1a1".to_owned();
    let bob = "b2b2b2b2b2b2b2b2b2b2b2b2".to_owned();
    let never = "c3c3c3c3c3c3c3c3c3c3c3c3".to_owned();

    // Nobody is online at first; nobody was ever seen.
    let states = a.states(&[alice.clone(), never.clone()]).await.unwrap();
    assert_eq!(
        states,
        vec![
            PresenceState::offline(&alice, None),
            PresenceState::offline(&never, None)
        ]
    );
    assert!(a.states(&[]).await.unwrap().is_empty());

    // The first socket makes the user online; more sockets change nothing.
    assert_eq!(
        a.connected(&alice).await.unwrap(),
        Some(PresenceState::online(&alice, None))
    );
    assert_eq!(a.connected(&alice).await.unwrap(), None, "a second device");
    assert!(a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online);

    // Closing one of two keeps the user online; the last one sets lastSeen.
    assert_eq!(a.disconnected(&alice).await.unwrap(), None);
    assert!(a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online);
    let off = a.disconnected(&alice).await.unwrap().expect("the last socket closed");
    assert!(!off.online && near(off.last_seen, clock.now_millis()), "{off:?}");
    let now = a.states(std::slice::from_ref(&alice)).await.unwrap().remove(0);
    assert_eq!(now, off, "the state read back is the one reported");

    // Back online: lastSeen is kept (when they were last seen offline).
    let on = a.connected(&alice).await.unwrap().expect("online again");
    assert_eq!(on.last_seen, off.last_seen);
    assert_eq!(a.disconnected(&alice).await.unwrap().map(|s| s.online), Some(false));

    // A close that was never counted is ignored.
    assert_eq!(a.disconnected(&never).await.unwrap(), None);
    assert!(!a.states(std::slice::from_ref(&never)).await.unwrap()[0].online);

    // States answer in the order asked.
    a.connected(&bob).await.unwrap();
    let states = a.states(&[bob.clone(), alice.clone(), bob.clone()]).await.unwrap();
    assert_eq!(
        states
            .iter()
            .map(|s| (s.user_id.as_str(), s.online))
            .collect::<Vec<_>>(),
        [(bob.as_str(), true), (alice.as_str(), false), (bob.as_str(), true)]
    );

    let Some(b) = b else {
        a.disconnected(&bob).await.unwrap();
        assert!(
            a.sweep().await.unwrap().is_empty(),
            "a single node has nothing to sweep"
        );
        return;
    };
    // Across nodes: online while any node counts a socket; each node sees the same.
    assert_eq!(
        b.connected(&bob).await.unwrap(),
        None,
        "bob is online through a already"
    );
    assert!(b.states(std::slice::from_ref(&bob)).await.unwrap()[0].online);
    assert_eq!(a.disconnected(&bob).await.unwrap(), None, "still connected to b");
    assert!(a.states(std::slice::from_ref(&bob)).await.unwrap()[0].online);
    let off = b.disconnected(&bob).await.unwrap().expect("bob's last socket, on b");
    assert!(!off.online);
    assert_eq!(a.states(std::slice::from_ref(&bob)).await.unwrap()[0], off);
    assert!(
        b.connected(&alice).await.unwrap().is_some(),
        "alice comes online through b"
    );
    assert!(
        a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online,
        "a sees it"
    );
    // Live nodes that sweep report nothing.
    assert!(a.sweep().await.unwrap().is_empty());
    assert!(b.sweep().await.unwrap().is_empty());
    assert!(b.disconnected(&alice).await.unwrap().is_some());
}
