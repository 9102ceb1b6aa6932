//! The chat socket events with a real Socket.IO client: delivery to every socket of both
//! users, acks and old-style clients without acks, idempotent retries, order under a
//! burst, reconnect + sync without gaps, read receipts, typing, bad payloads, restarts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::chat_support::{Sock, TOML, User, call, ids, register, texts};
use crate::support::{Server, StartOptions};

fn assert_ack_error(ack: &Value, code: &str, field: Option<&str>) {
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], code, "{ack}");
    assert!(ack["error"]["message"].is_string(), "{ack}");
    if let Some(f) = field {
        assert_eq!(ack["error"]["field"], f, "{ack}");
    }
}

fn send(to: &User, text: &str) -> Value {
    json!({"receiverId": to.id, "message": text})
}

/// Up to 200 messages of `me`'s conversation with `other`, over REST.
async fn history(s: &Server, me: &User, other: &User) -> (u16, Value) {
    call(
        s,
        Some(me),
        "GET",
        &format!("/chats/{}/with/{}?limit=200", me.id, other.id),
        None,
    )
    .await
}

/// Sends `text` with an ack and returns the stored message.
async fn send_acked(sock: &Sock, to: &User, text: &str) -> Value {
    let ack = sock.ack("send_message", send(to, text)).await;
    assert_eq!(ack["ok"], true, "{ack}");
    ack["message"].clone()
}

/// Delivery is ordered per sender, so once `marker` arrives nothing sent before it is
/// still on its way: the events seen up to it are all there will be.
async fn events_until_marker(sock: &mut Sock, event: &str, marker: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = sock.next(event).await;
        if v["message"] == marker {
            return seen;
        }
        seen.push(v);
    }
}

#[tokio::test]
async fn chat_socket_send_reaches_every_socket_of_both_users_once() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let (mut a1, mut a2) = (Sock::connect(&s, &alice).await, Sock::connect(&s, &alice).await);
    let (mut b1, mut b2) = (Sock::connect(&s, &bob).await, Sock::connect(&s, &bob).await);

    let ack = a1
        .ack(
            "send_message",
            json!({"receiverId": bob.id, "message": "hello", "clientMsgId": "k1"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let m = ack["message"].clone();
    assert_eq!(
        (m["senderId"].as_str(), m["receiverId"].as_str()),
        (Some(alice.id.as_str()), Some(bob.id.as_str()))
    );
    assert_eq!(
        (m["message"].as_str(), m["clientMsgId"].as_str()),
        (Some("hello"), Some("k1"))
    );
    // A sender id in the payload is ignored: the sender is who the socket authenticated.
    let spoof = a1
        .ack(
            "send_message",
            json!({"senderId": bob.id, "receiverId": bob.id, "message": "spoof"}),
        )
        .await;
    assert_eq!(spoof["message"]["senderId"], alice.id.as_str(), "{spoof}");
    send_acked(&a1, &bob, "marker").await;

    for sock in [&mut b1, &mut b2] {
        let got = events_until_marker(sock, "receive_message", "marker").await;
        assert_eq!(got, [m.clone(), spoof["message"].clone()]);
    }
    for sock in [&mut a1, &mut a2] {
        let got = events_until_marker(sock, "message_sent", "marker").await;
        assert_eq!(got, [m.clone(), spoof["message"].clone()]);
        assert!(
            sock.drain("receive_message").is_empty(),
            "the sender does not receive its own message"
        );
    }
    for sock in [&mut b1, &mut b2] {
        assert!(sock.drain("message_sent").is_empty());
    }
    for sock in [a1, a2, b1, b2] {
        sock.close().await;
    }
}

#[tokio::test]
async fn chat_socket_old_style_client_without_acks() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    let mut b = Sock::connect(&s, &bob).await;

    // Exactly what the old backend's clients emit and listen for.
    a.emit("send_message", json!({"receiverId": bob.id, "message": "hi bob"}))
        .await;
    let sent = a.next("message_sent").await;
    assert_eq!(sent["message"], "hi bob");
    assert_eq!(b.next("receive_message").await, sent);
    b.emit("send_message", json!({"receiverId": alice.id, "message": "hi alice"}))
        .await;
    assert_eq!(a.next("receive_message").await["message"], "hi alice");

    a.emit("fetch_history", json!({"withUser": bob.id})).await;
    let history = a.next("chat_history").await;
    assert_eq!(texts(&history), ["hi bob", "hi alice"]);

    // Mistakes arrive as `error` events, and the socket keeps working.
    a.emit("send_message", json!({"receiverId": bob.id})).await;
    let e = a.next("error").await;
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("validation_failed"), Some("message")),
        "{e}"
    );
    a.emit(
        "send_message",
        json!({"receiverId": "0123456789abcdef01234567", "message": "to nobody"}),
    )
    .await;
    assert_eq!(a.next("error").await["code"], "not_found");
    a.emit("fetch_history", json!({"withUser": bob.id, "limit": 0})).await;
    assert_eq!(a.next("error").await["field"], "limit");
    a.emit("sync", json!({})).await;
    assert_eq!(a.next("error").await["field"], "ack", "sync needs an ack");
    a.emit("send_message", json!({"receiverId": bob.id, "message": "still here"}))
        .await;
    assert_eq!(a.next("message_sent").await["message"], "still here");
    assert_eq!(b.next("receive_message").await["message"], "still here");
    assert!(a.drain("error").is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn chat_socket_idempotent_retry_is_stored_and_delivered_once() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let (mut a1, mut a2) = (Sock::connect(&s, &alice).await, Sock::connect(&s, &alice).await);
    let mut b = Sock::connect(&s, &bob).await;

    let payload = json!({"receiverId": bob.id, "message": "exactly once", "clientMsgId": "retry-1"});
    let first = a1.ack("send_message", payload.clone()).await;
    let again = a1.ack("send_message", payload.clone()).await;
    // A retry from another device of the same user is the same message too.
    let other_device = a2.ack("send_message", payload.clone()).await;
    assert_eq!(first, again);
    assert_eq!(first, other_device);
    assert_eq!(first["ok"], true);
    let reused = a1
        .ack(
            "send_message",
            json!({"receiverId": bob.id, "message": "another", "clientMsgId": "retry-1"}),
        )
        .await;
    assert_eq!(reused["ok"], false, "{reused}");
    assert_eq!(reused["error"]["code"], "conflict", "{reused}");

    // An old-style client retrying without an ack learns the outcome on its own socket.
    a1.emit("send_message", payload).await;
    send_acked(&a1, &bob, "marker").await;
    let on_a1 = events_until_marker(&mut a1, "message_sent", "marker").await;
    assert_eq!(
        on_a1,
        [first["message"].clone(), first["message"].clone()],
        "original + the ack-less retry's answer"
    );
    assert_eq!(
        events_until_marker(&mut a2, "message_sent", "marker").await,
        [first["message"].clone()]
    );
    assert_eq!(
        events_until_marker(&mut b, "receive_message", "marker").await,
        [first["message"].clone()]
    );

    let (_, h) = history(&s, &bob, &alice).await;
    assert_eq!(texts(&h), ["exactly once", "marker"]);
    for sock in [a1, a2, b] {
        sock.close().await;
    }
}

#[tokio::test]
async fn chat_socket_burst_keeps_send_order() {
    const N: usize = 200;
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    let mut b = Sock::connect(&s, &bob).await;
    let expected: Vec<String> = (0..N).map(|i| format!("burst {i}")).collect();
    // Back to back, without waiting for anything in between.
    for text in &expected {
        a.emit("send_message", send(&bob, text)).await;
    }
    let received = b.take("receive_message", N).await;
    assert_eq!(texts(&Value::Array(received.clone())), expected);
    let confirmed = a.take("message_sent", N).await;
    assert_eq!(confirmed, received);
    let (_, stored) = history(&s, &alice, &bob).await;
    assert_eq!(texts(&stored), expected);
    assert_eq!(ids(&stored), ids(&Value::Array(received)));
    assert!(a.drain("error").is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn chat_socket_interleaved_senders_keep_per_pair_order() {
    const N: usize = 60;
    let s = Server::start(TOML).await;
    let (alice, bob, carol) = (
        register(&s, "alice").await,
        register(&s, "bob").await,
        register(&s, "carol").await,
    );
    let a = Sock::connect(&s, &alice).await;
    let c = Sock::connect(&s, &carol).await;
    let mut b = Sock::connect(&s, &bob).await;
    for i in 0..N {
        a.emit("send_message", send(&bob, &format!("a{i}"))).await;
        c.emit("send_message", send(&bob, &format!("c{i}"))).await;
    }
    let got = b.take("receive_message", 2 * N).await;
    for (who, prefix) in [(&alice, "a"), (&carol, "c")] {
        let from: Vec<String> = got
            .iter()
            .filter(|m| m["senderId"] == who.id.as_str())
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(from, (0..N).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>());
    }
    for sock in [a, b, c] {
        sock.close().await;
    }
}

#[tokio::test]
async fn chat_socket_fetch_history_pages_and_errors() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send_acked(&a, &bob, &format!("h{i}")).await["_id"].clone());
    }
    let ack = a.ack("fetch_history", json!({"withUser": bob.id, "limit": 2})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(texts(&ack["messages"]), ["h3", "h4"]);
    // The old event comes too, with the same list.
    assert_eq!(a.next("chat_history").await, ack["messages"]);
    let ack = a
        .ack(
            "fetch_history",
            json!({"withUser": bob.id, "before": sent[3], "limit": 2}),
        )
        .await;
    assert_eq!(texts(&ack["messages"]), ["h1", "h2"]);
    let ack = a
        .ack(
            "fetch_history",
            json!({"withUser": bob.id, "after": sent[0], "before": sent[4], "limit": null}),
        )
        .await;
    assert_eq!(texts(&ack["messages"]), ["h1", "h2", "h3"]);

    for (payload, field) in [
        (json!({}), "withUser"),
        (json!({"withUser": 12}), "withUser"),
        (json!({"withUser": bob.id, "limit": 0}), "limit"),
        (json!({"withUser": bob.id, "limit": 201}), "limit"),
        (json!({"withUser": bob.id, "limit": "10"}), "limit"),
        (json!({"withUser": bob.id, "limit": 2.5}), "limit"),
        (
            json!({"withUser": bob.id, "before": "0123456789abcdef01234567"}),
            "before",
        ),
        (json!({"withUser": bob.id, "after": "short"}), "after"),
        (json!({"withUser": bob.id, "after": 5}), "after"),
    ] {
        assert_ack_error(&a.ack("fetch_history", payload).await, "validation_failed", Some(field));
    }
    a.drain("chat_history");
    a.close().await;
}

#[tokio::test]
async fn chat_socket_mark_read_notifies_both_users() {
    let s = Server::start(TOML).await;
    let (alice, bob, carol) = (
        register(&s, "alice").await,
        register(&s, "bob").await,
        register(&s, "carol").await,
    );
    let (mut a1, mut a2) = (Sock::connect(&s, &alice).await, Sock::connect(&s, &alice).await);
    let (mut b1, mut b2) = (Sock::connect(&s, &bob).await, Sock::connect(&s, &bob).await);
    let first = send_acked(&a1, &bob, "one").await;
    let second = send_acked(&a1, &bob, "two").await;

    let ack = b1
        .ack("mark_read", json!({"withUser": alice.id, "upTo": first["_id"]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        (ack["userId"].as_str(), ack["withUser"].as_str()),
        (Some(bob.id.as_str()), Some(alice.id.as_str()))
    );
    assert_eq!(
        (ack["upTo"].clone(), ack["unread"].clone()),
        (first["_id"].clone(), json!(1))
    );
    let event = json!({"by": bob.id, "withUser": alice.id, "upTo": first["_id"], "readAt": ack["readAt"]});
    for sock in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert_eq!(sock.next("messages_read").await, event);
    }
    // Without upTo: everything; an old-style client gets no ack but the event still goes out.
    b2.emit("mark_read", json!({"withUser": alice.id})).await;
    for sock in [&mut a1, &mut b1] {
        assert_eq!(sock.next("messages_read").await["upTo"], second["_id"]);
    }

    let elsewhere = send_acked(&a1, &carol, "hi carol").await;
    for (payload, field) in [
        (json!({}), "withUser"),
        (json!({"withUser": "x"}), "withUser"),
        (json!({"withUser": alice.id, "upTo": 1}), "upTo"),
        (json!({"withUser": alice.id, "upTo": elsewhere["_id"]}), "upTo"),
    ] {
        assert_ack_error(&b1.ack("mark_read", payload).await, "validation_failed", Some(field));
    }
    for sock in [a1, a2, b1, b2] {
        sock.close().await;
    }
}

#[tokio::test]
async fn chat_socket_typing_reaches_the_receiver() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let a = Sock::connect(&s, &alice).await;
    let (mut b1, mut b2) = (Sock::connect(&s, &bob).await, Sock::connect(&s, &bob).await);
    assert_eq!(
        a.ack("typing", json!({"to": bob.id, "isTyping": true})).await,
        json!({"ok": true})
    );
    a.emit("typing", json!({"to": bob.id, "isTyping": false})).await;
    for sock in [&mut b1, &mut b2] {
        assert_eq!(sock.next("typing").await, json!({"from": alice.id, "isTyping": true}));
        assert_eq!(sock.next("typing").await, json!({"from": alice.id, "isTyping": false}));
    }
    for (payload, field) in [
        (json!({"to": bob.id}), "isTyping"),
        (json!({"to": bob.id, "isTyping": "yes"}), "isTyping"),
        (json!({"to": "bob", "isTyping": true}), "to"),
        (json!({"isTyping": true}), "to"),
    ] {
        assert_ack_error(&a.ack("typing", payload).await, "validation_failed", Some(field));
    }
    for sock in [a, b1, b2] {
        sock.close().await;
    }
}

#[tokio::test]
async fn chat_socket_typing_can_be_disabled() {
    let s = Server::start(&format!("{TOML}\n[chat]\ntyping_enabled = false\n")).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let a = Sock::connect(&s, &alice).await;
    assert_ack_error(
        &a.ack("typing", json!({"to": bob.id, "isTyping": true})).await,
        "not_found",
        None,
    );
    a.close().await;
}

#[tokio::test]
async fn chat_socket_reconnect_and_sync_recovers_exactly_the_missed_messages() {
    let s = Server::start(&format!("{TOML}\n[chat]\nsync_default = 3\nsync_max = 4\n")).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let a = Sock::connect(&s, &alice).await;
    let mut b = Sock::connect(&s, &bob).await;
    send_acked(&a, &bob, "seen").await;
    let last_seen = b.next("receive_message").await;
    b.close().await;

    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(send_acked(&a, &bob, &format!("missed {i}")).await);
    }
    // Bob's own message from another device (REST) is part of what he missed too.
    let (status, own) = call(
        &s,
        Some(&bob),
        "POST",
        &format!("/chats/{}/send", bob.id),
        Some(json!({"receiverId": alice.id, "message": "from my phone"})),
    )
    .await;
    assert_eq!(status, 201, "{own}");
    missed.push(own);

    let b = Sock::connect(&s, &bob).await;
    let mut recovered = Vec::new();
    let mut cursor = last_seen["_id"].clone();
    loop {
        let ack = b.ack("sync", json!({"after": cursor})).await;
        assert_eq!(ack["ok"], true, "{ack}");
        let batch = ack["messages"].as_array().unwrap().clone();
        assert!(batch.len() <= 3, "sync_default applies");
        recovered.extend(batch);
        if ack["hasMore"] == false {
            break;
        }
        cursor = recovered.last().unwrap()["_id"].clone();
    }
    assert_eq!(recovered, missed);
    // From the beginning (no cursor), with an explicit limit.
    let all = b.ack("sync", json!({"limit": 4})).await;
    assert_eq!(all["hasMore"], true);
    assert_eq!(all["messages"][0], last_seen);
    let all = b.ack("sync", Value::Null).await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 3);

    for (payload, field) in [
        (json!({"after": "0123456789abcdef01234567"}), "after"),
        (json!({"after": "garbage"}), "after"),
        (json!({"limit": 5}), "limit"),
        (json!({"afterPos": "3"}), "afterPos"),
    ] {
        assert_ack_error(&b.ack("sync", payload).await, "validation_failed", Some(field));
    }
    // `limit: 0` answers the head alone (DESIGN §4): where a new device starts.
    let head = b.ack("sync", json!({"limit": 0})).await;
    assert_eq!(
        (head["messages"].as_array().map(Vec::len), head["hasMore"].as_bool()),
        (Some(0), Some(false)),
        "{head}"
    );
    assert!(head["headPos"].as_u64().is_some_and(|h| h >= 3), "{head}");
    // Carol cannot use Alice and Bob's messages as her cursor.
    let carol = register(&s, "carol").await;
    let c = Sock::connect(&s, &carol).await;
    assert_ack_error(
        &c.ack("sync", json!({"after": last_seen["_id"]})).await,
        "validation_failed",
        Some("after"),
    );
    for sock in [a, b, c] {
        sock.close().await;
    }
}

#[tokio::test]
async fn chat_socket_bad_events_leave_the_socket_usable() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    let mut b = Sock::connect(&s, &bob).await;
    let garbage = [
        ("send_message", json!("garbage")),
        ("send_message", json!(42)),
        ("send_message", json!([1, 2, 3])),
        ("send_message", json!(null)),
        ("send_message", json!({"receiverId": 5, "message": "x"})),
        (
            "send_message",
            json!({"receiverId": bob.id, "message": {"nested": true}}),
        ),
        (
            "send_message",
            json!({"receiverId": bob.id, "message": "x".repeat(4001)}),
        ),
        ("fetch_history", json!("x")),
        ("mark_read", json!(7)),
        ("typing", json!(true)),
        ("sync", json!("after")),
    ];
    for (event, payload) in &garbage {
        let ack = a.ack(event, payload.clone()).await;
        assert_eq!(ack["ok"], false, "{event} {payload}: {ack}");
        let code = ack["error"]["code"].as_str().unwrap();
        assert!(
            code == "validation_failed" || code == "payload_too_large",
            "{event} {payload}: {ack}"
        );
    }
    assert_ack_error(
        &a.ack(
            "send_message",
            json!({"receiverId": bob.id, "message": "x".repeat(4001)}),
        )
        .await,
        "payload_too_large",
        Some("message"),
    );
    assert_ack_error(&a.ack("no_such_event", json!({})).await, "not_found", None);
    // The same garbage without acks: one `error` event each, nothing else.
    for (event, payload) in &garbage {
        a.emit(event, payload.clone()).await;
    }
    let errors = a.take("error", garbage.len()).await;
    assert!(
        errors.iter().all(|e| e["code"].is_string() && e["message"].is_string()),
        "{errors:?}"
    );
    // Still usable.
    let m = send_acked(&a, &bob, "all good").await;
    assert_eq!(b.next("receive_message").await, m);
    assert!(b.drain("receive_message").is_empty(), "no garbage was delivered");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn chat_socket_note_to_self_is_delivered_once_per_socket() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let (mut a1, mut a2) = (Sock::connect(&s, &alice).await, Sock::connect(&s, &alice).await);
    let note = send_acked(&a1, &alice, "note to self").await;
    assert_eq!(note["receiverId"], alice.id.as_str());
    send_acked(&a1, &bob, "marker").await;
    for sock in [&mut a1, &mut a2] {
        assert_eq!(
            events_until_marker(sock, "message_sent", "marker").await,
            std::slice::from_ref(&note)
        );
        assert!(
            sock.drain("receive_message").is_empty(),
            "a note to self comes as message_sent only"
        );
    }
    a1.close().await;
    a2.close().await;
}

#[tokio::test]
async fn chat_history_survives_a_restart() {
    let dir = tempfile::TempDir::new().unwrap();
    let s = Server::start_with(StartOptions::new(TOML).data_dir(dir.path())).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let a = Sock::connect(&s, &alice).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send_acked(&a, &bob, &format!("before restart {i}")).await);
    }
    // Sends without acks, then an event that is answered without touching storage: its
    // answer shows the server took the 20 sends (events are dispatched in order and a send
    // queues its write at dispatch), whether or not they are committed yet. SIGTERM must
    // not lose any of them.
    for i in 0..20 {
        a.emit("send_message", send(&bob, &format!("in flight {i}"))).await;
    }
    let typed = a.ack("typing", json!({"to": bob.id, "isTyping": true})).await;
    assert_eq!(typed["ok"], true, "{typed}");
    drop(a);
    let status = s.stop().await;
    assert!(status.success(), "graceful stop: {status}");

    let s = Server::start_with(StartOptions::new(TOML).data_dir(dir.path())).await;
    let (status, h) = history(&s, &bob, &alice).await;
    assert_eq!(status, 200, "{h}");
    let stored = h.as_array().unwrap();
    assert_eq!(&stored[..3], &sent[..]);
    // Every send the server took is there, in order.
    let rest: Vec<String> = texts(&h)[3..].to_vec();
    assert_eq!(rest, (0..20).map(|i| format!("in flight {i}")).collect::<Vec<_>>());
    let b = Sock::connect(&s, &bob).await;
    let synced = b.ack("sync", json!({})).await;
    assert_eq!(synced["messages"].as_array().unwrap()[..3], sent[..]);
    let m = send_acked(&b, &alice, "after restart").await;
    assert_eq!(m["message"], "after restart");
    b.close().await;
}

#[tokio::test]
async fn events_beyond_max_in_flight_are_refused_and_nothing_is_lost() {
    let toml = "[server.socket]\nmax_in_flight = 2\nmax_buffer_size = 4096\n\
                [auth.password.argon2]\nmemory_kib = 1024\niterations = 1\n";
    let s = Server::start(toml).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    // Back to back, without acks: rust_socketio draws ack ids at random from 0..999, so
    // dozens of acks in flight at once would collide on the client. Each send is answered
    // by `message_sent` (taken) or an `error` event (refused).
    const N: usize = 100;
    for i in 0..N {
        a.emit("send_message", send(&bob, &format!("burst {i}"))).await;
    }
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while taken.len() + refused.len() < N && std::time::Instant::now() < deadline {
        while let Some(m) = a.try_next("message_sent", Duration::from_millis(50)).await {
            taken.push(m["message"].as_str().unwrap().to_owned());
        }
        while let Some(e) = a.try_next("error", Duration::from_millis(50)).await {
            refused.push(e);
        }
    }
    assert_eq!(
        taken.len() + refused.len(),
        N,
        "every send is answered: {taken:?} {refused:?}"
    );
    assert!(!refused.is_empty(), "some sends are refused");
    for e in &refused {
        assert_eq!(e["code"], "unavailable", "{e}");
    }
    // What was taken is stored, in order; what was refused is not.
    let (_, h) = history(&s, &bob, &alice).await;
    assert_eq!(texts(&h), taken);
    // The slots come back: the socket keeps working.
    let m = send_acked(&a, &bob, "after the burst").await;
    assert_eq!(m["message"], "after the burst");
    a.close().await;
}
