//! The presence plugin through the real binary (one node, in-process cluster backend):
//! `GET /users/{id}/presence`, `subscribe_presence` / `unsubscribe_presence` and the
//! `presence` events, several devices, validation, and the plugin switched off. The
//! cross-node behaviour is in `cluster.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::chat_support::{Sock, TOML, User, call, register};
use crate::support::Server;

async fn presence_of(s: &Server, asker: &User, id: &str) -> Value {
    let (status, body) = call(s, Some(asker), "GET", &format!("/users/{id}/presence"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn assert_state(v: &Value, user: &User, online: bool) {
    assert_eq!(v["userId"], user.id.as_str(), "{v}");
    assert_eq!(v["online"], online, "{v}");
    assert!(v.get("lastSeen").is_some(), "lastSeen is always present: {v}");
}

fn assert_rfc3339(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(s.ends_with('Z') && s.len() == 24, "RFC 3339 UTC with milliseconds: {s}");
}

#[tokio::test]
async fn presence_rest_needs_auth_and_a_known_user() {
    let s = Server::start(TOML).await;
    let alice = register(&s, "alice").await;
    let path = format!("/users/{}/presence", alice.id);

    let (status, body) = call(&s, None, "GET", &path, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");

    for unknown in ["0123456789abcdef01234567", "not-an-id"] {
        let (status, body) = call(&s, Some(&alice), "GET", &format!("/users/{unknown}/presence"), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{unknown}: {body}"
        );
    }

    let me = presence_of(&s, &alice, &alice.id).await;
    assert_eq!(me, json!({"userId": alice.id, "online": false, "lastSeen": null}));
    // Ids in upper case name the same user.
    let upper = presence_of(&s, &alice, &alice.id.to_uppercase()).await;
    assert_eq!(upper["userId"], alice.id.as_str());
}

#[tokio::test]
async fn presence_stays_online_while_any_device_is_connected() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let phone = Sock::connect(&s, &alice).await;
    let laptop = Sock::connect(&s, &alice).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_state(&presence_of(&s, &bob, &alice.id).await, &alice, true);

    phone.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_state(&presence_of(&s, &bob, &alice.id).await, &alice, true);

    laptop.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let state = loop {
        let v = presence_of(&s, &bob, &alice.id).await;
        if v["online"] == false {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "still online: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_rfc3339(&state["lastSeen"]);

    // Online again: lastSeen keeps the time they were last seen.
    let again = Sock::connect(&s, &alice).await;
    let v = presence_of(&s, &bob, &alice.id).await;
    assert_eq!(
        (v["online"].clone(), v["lastSeen"].clone()),
        (json!(true), state["lastSeen"].clone())
    );
    again.close().await;
}

#[tokio::test]
async fn presence_subscribe_acks_states_then_pushes_changes() {
    let s = Server::start(TOML).await;
    let (alice, bob, carol) = (
        register(&s, "alice").await,
        register(&s, "bob").await,
        register(&s, "carol").await,
    );
    let mut watcher = Sock::connect(&s, &bob).await;
    let carol_sock = Sock::connect(&s, &carol).await;
    // Her connect hook runs after the handshake answer: wait until it has.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while presence_of(&s, &bob, &carol.id).await["online"] != true {
        assert!(tokio::time::Instant::now() < deadline, "carol never came online");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let ack = watcher
        .ack(
            "subscribe_presence",
            json!({"userIds": [alice.id, carol.id.to_uppercase()]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let states = ack["states"].as_array().expect("states");
    assert_eq!(states.len(), 2, "{ack}");
    assert_eq!(
        states[0],
        json!({"userId": alice.id, "online": false, "lastSeen": null})
    );
    assert_state(&states[1], &carol, true);

    let a1 = Sock::connect(&s, &alice).await;
    // Carol's own `online` may still be on its way (her connect hook raced the subscribe).
    let mut on = watcher.next("presence").await;
    if on["userId"] == carol.id.as_str() && on["online"] == true {
        on = watcher.next("presence").await;
    }
    assert_state(&on, &alice, true);
    // A second device is no change.
    let a2 = Sock::connect(&s, &alice).await;
    // The connect hook runs just after the handshake: let it count the socket first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a2.close().await;
    a1.close().await;
    let off = watcher.next("presence").await;
    assert_state(&off, &alice, false);
    assert_rfc3339(&off["lastSeen"]);
    assert!(
        watcher.try_next("presence", Duration::from_millis(500)).await.is_none(),
        "one event per change"
    );

    // Unsubscribed: nothing more about alice; carol is still watched.
    let ack = watcher
        .ack("unsubscribe_presence", json!({"userIds": [alice.id]}))
        .await;
    assert_eq!(ack, json!({"ok": true}));
    Sock::connect(&s, &alice).await.close().await;
    carol_sock.close().await;
    let next = watcher.next("presence").await;
    assert_state(&next, &carol, false);
    assert!(
        watcher.try_next("presence", Duration::from_millis(500)).await.is_none(),
        "nothing about alice"
    );
}

#[tokio::test]
async fn presence_subscribe_without_ack_gets_states_as_events() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut watcher = Sock::connect(&s, &bob).await;
    watcher.emit("subscribe_presence", json!({"userIds": [alice.id]})).await;
    let v = watcher.next("presence").await;
    assert_state(&v, &alice, false);
    watcher.emit("subscribe_presence", json!({"userIds": "nope"})).await;
    let e = watcher.next("error").await;
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("validation_failed"), Some("userIds")),
        "{e}"
    );
}

#[tokio::test]
async fn presence_subscribe_validates_its_payload() {
    let s = Server::start(TOML).await;
    let bob = register(&s, "bob").await;
    let watcher = Sock::connect(&s, &bob).await;
    let many: Vec<String> = (0..101).map(|i| format!("{i:024x}")).collect();
    for (payload, field) in [
        (json!("nope"), "payload"),
        (json!({}), "userIds"),
        (json!({"userIds": "x"}), "userIds"),
        (json!({"userIds": [bob.id, "zz"]}), "userIds[1]"),
        (json!({"userIds": [7]}), "userIds[0]"),
        (json!({"userIds": many}), "userIds"),
    ] {
        let ack = watcher.ack("subscribe_presence", payload.clone()).await;
        assert_eq!(ack["ok"], false, "{payload}: {ack}");
        assert_eq!(ack["error"]["code"], "validation_failed", "{payload}: {ack}");
        assert_eq!(ack["error"]["field"], field, "{payload}: {ack}");
    }
    // An empty list is fine, and 100 ids are allowed.
    let ack = watcher.ack("subscribe_presence", json!({"userIds": []})).await;
    assert_eq!(ack, json!({"ok": true, "states": []}));
    let hundred: Vec<String> = (0..100).map(|i| format!("{i:024x}")).collect();
    let ack = watcher.ack("subscribe_presence", json!({"userIds": hundred})).await;
    assert_eq!(ack["states"].as_array().map(Vec::len), Some(100), "{ack}");
    // The socket stays usable.
    let ack = watcher.ack("subscribe_presence", json!({"userIds": [bob.id]})).await;
    assert_state(&ack["states"][0], &bob, true);
}

#[tokio::test]
async fn presence_is_documented_and_disabling_it_removes_everything() {
    let s = Server::start(TOML).await;
    let (_, doc) = call(&s, None, "GET", "/openapi.json", None).await;
    assert!(
        doc["paths"]["/users/{id}/presence"]["get"].is_object(),
        "path documented"
    );
    assert!(doc["components"]["schemas"]["Presence"].is_object());
    for e in ["subscribe_presence", "unsubscribe_presence", "presence"] {
        assert!(doc["x-socket-events"][e].is_object(), "event {e} documented");
    }
    drop(s);

    let s = Server::start(&format!("{TOML}\n[presence]\nenabled = false\n")).await;
    let bob = register(&s, "bob").await;
    let (status, _) = call(&s, Some(&bob), "GET", &format!("/users/{}/presence", bob.id), None).await;
    assert_eq!(status, 404);
    let sock = Sock::connect(&s, &bob).await;
    let ack = sock.ack("subscribe_presence", json!({"userIds": [bob.id]})).await;
    assert_eq!(ack["error"]["code"], "not_found", "{ack}");
    let (_, doc) = call(&s, None, "GET", "/openapi.json", None).await;
    assert!(doc["paths"]["/users/{id}/presence"].is_null());
    assert!(doc["x-socket-events"]["subscribe_presence"].is_null());
}
