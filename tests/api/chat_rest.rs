//! The chat REST routes through the real binary: send, history paging, conversations,
//! read receipts, idempotency, validation codes, 401/403, and the OpenAPI fragment.

use serde_json::{Value, json};

use crate::chat_support::{Sock, TOML, User, call, ids, register, rest_send, texts};
use crate::support::Server;

fn is_rfc3339_millis_utc(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    // 2026-01-02T03:04:05.678Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.' && s.as_bytes()[10] == b'T'
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str, field: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    if let Some(f) = field {
        assert_eq!(body["field"], f, "{body}");
    }
}

async fn history(s: &Server, u: &User, with: &str, query: &str) -> (u16, Value) {
    call(s, Some(u), "GET", &format!("/chats/{}/with/{with}{query}", u.id), None).await
}

#[tokio::test]
async fn chat_rest_send_history_conversations_and_read() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(rest_send(&s, &alice, &bob.id, text).await);
    }
    let m = &sent[0];
    assert!(
        m["_id"].as_str().unwrap().len() == 24 && m["_id"].as_str().unwrap().bytes().all(|b| b.is_ascii_hexdigit()),
        "{m}"
    );
    assert_eq!(m["senderId"], alice.id.as_str());
    assert_eq!(m["receiverId"], bob.id.as_str());
    assert_eq!(m["message"], "one");
    assert!(m.get("clientMsgId").is_none(), "absent clientMsgId is omitted: {m}");
    assert!(
        is_rfc3339_millis_utc(&m["createdAt"]) && is_rfc3339_millis_utc(&m["updatedAt"]),
        "{m}"
    );

    // Both participants see the same conversation, oldest first.
    let (status, a_view) = history(&s, &alice, &bob.id, "").await;
    assert_eq!(status, 200, "{a_view}");
    assert_eq!(texts(&a_view), ["one", "two", "three"]);
    let (_, b_view) = history(&s, &bob, &alice.id, "").await;
    assert_eq!(a_view, b_view);

    let (status, convs) = call(&s, Some(&bob), "GET", &format!("/chats/{}/conversations", bob.id), None).await;
    assert_eq!(status, 200, "{convs}");
    assert_eq!(convs.as_array().unwrap().len(), 1, "{convs}");
    assert_eq!(convs[0]["partner"], alice.id.as_str());
    assert_eq!(convs[0]["lastMessage"]["message"], "three");
    assert_eq!(convs[0]["unread"], 3);
    assert!(is_rfc3339_millis_utc(&convs[0]["lastAt"]), "{convs}");
    let (_, a_convs) = call(
        &s,
        Some(&alice),
        "GET",
        &format!("/chats/{}/conversations", alice.id),
        None,
    )
    .await;
    assert_eq!(a_convs[0]["partner"], bob.id.as_str());
    assert_eq!(a_convs[0]["unread"], 0, "my own messages are never unread: {a_convs}");

    // Read up to the second message, then everything; the cursor never moves back.
    let read_path = format!("/chats/{}/read", bob.id);
    let read = |body: Value| call(&s, Some(&bob), "POST", &read_path, Some(body));
    let (status, state) = read(json!({"withUser": alice.id, "upTo": sent[1]["_id"]})).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["userId"], bob.id.as_str());
    assert_eq!(state["withUser"], alice.id.as_str());
    assert_eq!(state["upTo"], sent[1]["_id"]);
    assert_eq!(state["unread"], 1);
    assert!(is_rfc3339_millis_utc(&state["readAt"]), "{state}");
    let (_, state) = read(json!({"withUser": alice.id})).await;
    assert_eq!(
        (state["upTo"].clone(), state["unread"].clone()),
        (sent[2]["_id"].clone(), json!(0))
    );
    let (_, state) = read(json!({"withUser": alice.id, "upTo": sent[0]["_id"]})).await;
    assert_eq!(state["upTo"], sent[2]["_id"], "never moves back: {state}");
    let (_, convs) = call(&s, Some(&bob), "GET", &format!("/chats/{}/conversations", bob.id), None).await;
    assert_eq!(convs[0]["unread"], 0);

    // A newer conversation comes first.
    let carol = register(&s, "carol").await;
    rest_send(&s, &carol, &bob.id, "hi bob").await;
    let (_, convs) = call(&s, Some(&bob), "GET", &format!("/chats/{}/conversations", bob.id), None).await;
    let partners: Vec<&str> = convs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["partner"].as_str().unwrap())
        .collect();
    assert_eq!(partners, [carol.id.as_str(), alice.id.as_str()]);

    // Paging: one entry per page, then past the last one; bad cursors and limits are 400s.
    let list = |q: String| {
        let s = &s;
        let bob = &bob;
        async move {
            call(
                s,
                Some(bob),
                "GET",
                &format!("/chats/{}/conversations{q}", bob.id),
                None,
            )
            .await
        }
    };
    let more = |q: &str| {
        let r = s
            .http
            .get(s.url(&format!("/chats/{}/conversations{q}", bob.id)))
            .bearer_auth(&bob.token)
            .send();
        async move { r.await.unwrap().headers()["x-has-more"].to_str().unwrap().to_owned() }
    };
    assert_eq!(
        (more("?limit=1").await, more("?limit=2").await, more("").await),
        ("true".into(), "false".into(), "false".into())
    );
    let (status, page) = list("?limit=1".into()).await;
    assert_eq!((status, page.as_array().unwrap().len()), (200, 1), "{page}");
    assert_eq!(page[0]["partner"], carol.id);
    let (_, page) = list(format!(
        "?limit=1&before={}",
        page[0]["lastMessage"]["_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page[0]["partner"], alice.id);
    let (_, page) = list(format!(
        "?limit=1&before={}",
        page[0]["lastMessage"]["_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(page, json!([]));
    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?before=nope", "before"),
        ("?before=ffffffffffffffffffffffff", "before"),
    ] {
        let (status, e) = list(q.into()).await;
        assert_eq!((status, e["field"].as_str()), (400, Some(field)), "{q}: {e}");
    }
}

#[tokio::test]
async fn chat_rest_history_pages_with_cursors_and_limits() {
    let toml = format!("{TOML}\n[chat]\npage_default = 3\npage_max = 5\n");
    let s = Server::start(&toml).await;
    let (alice, bob, carol) = (
        register(&s, "alice").await,
        register(&s, "bob").await,
        register(&s, "carol").await,
    );
    let mut all = Vec::new();
    for i in 0..8 {
        let (from, to) = if i % 2 == 0 { (&alice, &bob) } else { (&bob, &alice) };
        all.push(
            rest_send(&s, from, &to.id, &format!("m{i}")).await["_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let other = rest_send(&s, &alice, &carol.id, "elsewhere").await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = |q: String| {
        let s = &s;
        let alice = &alice;
        let bob_id = bob.id.clone();
        async move { history(s, alice, &bob_id, &q).await }
    };
    // Default: the newest page_default, oldest first.
    assert_eq!(texts(&page(String::new()).await.1), ["m5", "m6", "m7"]);
    assert_eq!(texts(&page("?limit=5".into()).await.1), ["m3", "m4", "m5", "m6", "m7"]);
    assert_eq!(
        texts(&page(format!("?before={}&limit=2", all[5])).await.1),
        ["m3", "m4"]
    );
    assert_eq!(texts(&page(format!("?after={}&limit=2", all[0])).await.1), ["m1", "m2"]);
    assert_eq!(
        texts(&page(format!("?after={}&before={}", all[1], all[4])).await.1),
        ["m2", "m3"]
    );
    assert_eq!(texts(&page(format!("?after={}", all[7])).await.1), Vec::<String>::new());
    // Walking back with `before` reaches the start without gaps or repeats.
    let mut seen = Vec::new();
    let mut before = String::new();
    loop {
        let q = if before.is_empty() {
            "?limit=3".to_owned()
        } else {
            format!("?limit=3&before={before}")
        };
        let (_, p) = page(q).await;
        if p.as_array().unwrap().is_empty() {
            break;
        }
        let mut batch = ids(&p);
        before = batch[0].clone();
        batch.extend(seen);
        seen = batch;
    }
    assert_eq!(seen, all);

    for (q, field) in [
        ("?limit=6".to_owned(), "limit"),
        ("?limit=0".to_owned(), "limit"),
        ("?limit=abc".to_owned(), "limit"),
        ("?limit=-1".to_owned(), "limit"),
        ("?before=nope".to_owned(), "before"),
        (format!("?before={}", "0".repeat(24)), "before"),
        (format!("?after={other}"), "after"),
    ] {
        let (status, body) = page(q.clone()).await;
        assert_error(status, &body, 400, "validation_failed", Some(field));
    }
    let (status, body) = history(&s, &alice, "not-a-user", "").await;
    assert_error(status, &body, 400, "validation_failed", Some("withUser"));
    // Someone I never talked to: an empty conversation.
    let dave = register(&s, "dave").await;
    let (status, body) = history(&s, &alice, &dave.id, "").await;
    assert_eq!((status, body), (200, json!([])));
}

#[tokio::test]
async fn chat_rest_requires_the_caller_to_be_the_path_user() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let routes = |u: &str| {
        [
            ("GET", format!("/chats/{u}/with/{}", bob.id), None),
            (
                "POST",
                format!("/chats/{u}/send"),
                Some(json!({"receiverId": bob.id, "message": "x"})),
            ),
            ("GET", format!("/chats/{u}/conversations"), None),
            ("POST", format!("/chats/{u}/read"), Some(json!({"withUser": bob.id}))),
        ]
    };
    for (method, path, body) in routes(&alice.id) {
        let (status, b) = call(&s, None, method, &path, body).await;
        assert_error(status, &b, 401, "unauthorized", None);
    }
    for (method, path, body) in routes(&bob.id) {
        let (status, b) = call(&s, Some(&alice), method, &path, body).await;
        assert_error(status, &b, 403, "forbidden", None);
    }
    // Nothing was sent by the refused calls.
    let (_, h) = history(&s, &bob, &alice.id, "").await;
    assert_eq!(h, json!([]));
}

#[tokio::test]
async fn chat_rest_send_validation_codes() {
    let toml = format!("{TOML}\n[chat]\nmax_message_chars = 10\nmax_client_msg_id_len = 8\n");
    let s = Server::start(&toml).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let path = format!("/chats/{}/send", alice.id);
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"message": "hi"}), 400, "validation_failed", "receiverId"),
        (
            json!({"receiverId": "bob", "message": "hi"}),
            400,
            "validation_failed",
            "receiverId",
        ),
        (
            json!({"receiverId": 42, "message": "hi"}),
            400,
            "validation_failed",
            "receiverId",
        ),
        (
            json!({"receiverId": "0123456789abcdef01234567", "message": "hi"}),
            404,
            "not_found",
            "",
        ),
        (json!({"receiverId": bob.id}), 400, "validation_failed", "message"),
        (
            json!({"receiverId": bob.id, "message": ""}),
            400,
            "validation_failed",
            "message",
        ),
        (
            json!({"receiverId": bob.id, "message": " \n\t "}),
            400,
            "validation_failed",
            "message",
        ),
        (
            json!({"receiverId": bob.id, "message": 5}),
            400,
            "validation_failed",
            "message",
        ),
        (
            json!({"receiverId": bob.id, "message": ["a"]}),
            400,
            "validation_failed",
            "message",
        ),
        (
            json!({"receiverId": bob.id, "message": "12345678901"}),
            413,
            "payload_too_large",
            "message",
        ),
        (
            json!({"receiverId": bob.id, "message": "hi", "clientMsgId": ""}),
            400,
            "validation_failed",
            "clientMsgId",
        ),
        (
            json!({"receiverId": bob.id, "message": "hi", "clientMsgId": "123456789"}),
            400,
            "validation_failed",
            "clientMsgId",
        ),
        (
            json!({"receiverId": bob.id, "message": "hi", "clientMsgId": 7}),
            400,
            "validation_failed",
            "clientMsgId",
        ),
        (json!("just a string"), 400, "validation_failed", ""),
        (json!([1, 2]), 400, "validation_failed", ""),
    ];
    for (body, status, code, field) in cases {
        let (got, b) = call(&s, Some(&alice), "POST", &path, Some(body.clone())).await;
        assert_error(got, &b, status, code, (!field.is_empty()).then_some(field));
    }
    // Ten characters of twenty bytes fit: the limit counts characters.
    let (status, b) = call(
        &s,
        Some(&alice),
        "POST",
        &path,
        Some(json!({"receiverId": bob.id, "message": "éééééééééé"})),
    )
    .await;
    assert_eq!(status, 201, "{b}");
    // Not JSON at all, and a body over the server's body limit.
    let raw = |body: String| {
        reqwest::Client::new()
            .post(s.url(&path))
            .bearer_auth(&alice.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw("{not json".into()).await.unwrap();
    let status = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_error(status, &b, 400, "validation_failed", Some("body"));
    let r = raw(format!(
        r#"{{"receiverId":"{}","message":"{}"}}"#,
        bob.id,
        "x".repeat(100_000)
    ))
    .await
    .unwrap();
    let status = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_error(status, &b, 413, "payload_too_large", None);
    // None of the refused sends was stored.
    let (_, h) = history(&s, &bob, &alice.id, "").await;
    assert_eq!(texts(&h), ["éééééééééé"]);
}

#[tokio::test]
async fn chat_rest_idempotent_send_and_note_to_self() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let path = format!("/chats/{}/send", alice.id);
    let body = json!({"receiverId": bob.id, "message": "once", "clientMsgId": "c-1"});
    let (first_status, first) = call(&s, Some(&alice), "POST", &path, Some(body.clone())).await;
    let (again_status, again) = call(&s, Some(&alice), "POST", &path, Some(body)).await;
    assert_eq!((first_status, again_status), (201, 200), "{first} {again}");
    assert_eq!(first, again);
    assert_eq!(first["clientMsgId"], "c-1");
    // The same clientMsgId for another text is refused, not answered with the old message.
    let reused = json!({"receiverId": bob.id, "message": "twice?", "clientMsgId": "c-1"});
    let (status, e) = call(&s, Some(&alice), "POST", &path, Some(reused)).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("conflict"), Some("clientMsgId")),
        "{e}"
    );
    // The same clientMsgId from another sender is another message.
    let (status, other) = call(
        &s,
        Some(&bob),
        "POST",
        &format!("/chats/{}/send", bob.id),
        Some(json!({"receiverId": alice.id, "message": "mine", "clientMsgId": "c-1"})),
    )
    .await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["_id"], first["_id"]);
    let (_, h) = history(&s, &alice, &bob.id, "").await;
    assert_eq!(texts(&h), ["once", "mine"]);

    // A note to self is allowed and is a conversation with oneself.
    let (status, note) = call(
        &s,
        Some(&alice),
        "POST",
        &path,
        Some(json!({"receiverId": alice.id, "message": "remember"})),
    )
    .await;
    assert_eq!(status, 201, "{note}");
    let (_, h) = history(&s, &alice, &alice.id, "").await;
    assert_eq!(texts(&h), ["remember"]);
    let (_, convs) = call(
        &s,
        Some(&alice),
        "GET",
        &format!("/chats/{}/conversations", alice.id),
        None,
    )
    .await;
    assert_eq!(convs[0]["partner"], alice.id.as_str(), "{convs}");
    // The partner is oneself, so the note counts as unread until read, like any other.
    assert_eq!(convs[0]["unread"], 1, "{convs}");
    let (status, state) = call(
        &s,
        Some(&alice),
        "POST",
        &format!("/chats/{}/read", alice.id),
        Some(json!({"withUser": alice.id})),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        (state["upTo"].clone(), state["unread"].clone()),
        (note["_id"].clone(), json!(0))
    );
}

#[tokio::test]
async fn chat_rest_read_errors() {
    let s = Server::start(TOML).await;
    let (alice, bob, carol) = (
        register(&s, "alice").await,
        register(&s, "bob").await,
        register(&s, "carol").await,
    );
    let elsewhere = rest_send(&s, &alice, &carol.id, "hi carol").await;
    rest_send(&s, &alice, &bob.id, "hi bob").await;
    let path = format!("/chats/{}/read", bob.id);
    for (body, field) in [
        (json!({}), "withUser"),
        (json!({"withUser": 3}), "withUser"),
        (json!({"withUser": "alice"}), "withUser"),
        (json!({"withUser": alice.id, "upTo": "zzz"}), "upTo"),
        (json!({"withUser": alice.id, "upTo": elsewhere["_id"]}), "upTo"),
    ] {
        let (status, b) = call(&s, Some(&bob), "POST", &path, Some(body)).await;
        assert_error(status, &b, 400, "validation_failed", Some(field));
    }
    // Nobody to read from yet: a state that read nothing.
    let (status, state) = call(
        &s,
        Some(&carol),
        "POST",
        &format!("/chats/{}/read", carol.id),
        Some(json!({"withUser": bob.id})),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        (state["upTo"].clone(), state["readAt"].clone(), state["unread"].clone()),
        (Value::Null, Value::Null, json!(0))
    );
}

#[tokio::test]
async fn chat_rest_sends_and_reads_reach_the_sockets() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    let mut b = Sock::connect(&s, &bob).await;
    let m = rest_send(&s, &alice, &bob.id, "over rest").await;
    assert_eq!(b.next("receive_message").await, m);
    assert_eq!(a.next("message_sent").await, m);
    let (status, state) = call(
        &s,
        Some(&bob),
        "POST",
        &format!("/chats/{}/read", bob.id),
        Some(json!({"withUser": alice.id})),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    let expected = json!({"by": bob.id, "withUser": alice.id, "upTo": m["_id"], "readAt": state["readAt"]});
    assert_eq!(a.next("messages_read").await, expected);
    assert_eq!(b.next("messages_read").await, expected);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn chat_openapi_describes_routes_and_schemas() {
    let s = Server::start(TOML).await;
    let (status, doc) = call(&s, None, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    for (path, method) in [
        ("/chats/{userId}/with/{withUser}", "get"),
        ("/chats/{userId}/send", "post"),
        ("/chats/{userId}/conversations", "get"),
        ("/chats/{userId}/read", "post"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{path} {method}");
        assert!(
            op["responses"]["401"].is_object() && op["responses"]["403"].is_object(),
            "{path}"
        );
        let schemes: Vec<String> = op["security"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_object().unwrap().keys().cloned())
            .collect();
        assert_eq!(schemes, ["bearerAuth", "cookieAuth"], "{path}");
    }
    assert_eq!(
        doc["paths"]["/chats/{userId}/send"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Message"
    );
    for name in [
        "Message",
        "Conversation",
        "ReadState",
        "Error",
        "SendMessageRequest",
        "MarkReadRequest",
    ] {
        assert!(doc["components"]["schemas"][name].is_object(), "schema {name}");
    }
}

#[tokio::test]
async fn chat_openapi_lists_socket_events() {
    let s = Server::start(TOML).await;
    let (_, doc) = call(&s, None, "GET", "/openapi.json", None).await;
    let events = &doc["x-socket-events"];
    for e in [
        "send_message",
        "fetch_history",
        "typing",
        "mark_read",
        "sync",
        "receive_message",
        "message_sent",
        "chat_history",
        "messages_read",
    ] {
        assert!(
            events[e]["direction"].is_string(),
            "event {e} missing from x-socket-events: {events}"
        );
    }
    assert_eq!(
        events["send_message"]["payload"]["$ref"],
        "#/components/schemas/SendMessageRequest"
    );
}
