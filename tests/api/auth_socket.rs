//! Socket.IO handshake authentication with a real client: `auth.token`, the
//! `Authorization` header, the session cookie; refusals arrive as `connect_error`.

use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::Event;
use rust_socketio::Payload;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::{bare, register};
use crate::support::{Server, StartOptions, unique};

/// How a handshake ended: connected, or refused with the `connect_error` text.
enum Outcome {
    Connected(Client),
    Refused(String),
}

fn payload_text(p: &Payload) -> String {
    match p {
        Payload::Text(values) => values.iter().map(Value::to_string).collect::<Vec<_>>().join(" "),
        Payload::Binary(b) => format!("<{} bytes>", b.len()),
        #[allow(deprecated)]
        Payload::String(s) => s.clone(),
    }
}

async fn handshake(builder: ClientBuilder) -> Outcome {
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (on_connect, on_error) = (tx.clone(), tx);
    let client = builder
        .reconnect(false)
        .on(Event::Connect, move |_, _| {
            let _ = on_connect.send(Ok(()));
            async {}.boxed()
        })
        .on(Event::Error, move |p, _| {
            let _ = on_error.send(Err(payload_text(&p)));
            async {}.boxed()
        })
        .connect()
        .await;
    let client = match client {
        Ok(c) => c,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Ok(()))) => Outcome::Connected(client),
        Ok(Some(Err(msg))) => {
            let _ = client.disconnect().await;
            Outcome::Refused(msg)
        }
        Ok(None) | Err(_) => panic!("no connect or connect_error within 10 s"),
    }
}

async fn assert_connects(builder: ClientBuilder) {
    match handshake(builder).await {
        Outcome::Connected(c) => c.disconnect().await.unwrap(),
        Outcome::Refused(msg) => panic!("refused: {msg}"),
    }
}

async fn assert_refused(builder: ClientBuilder, message: &str) {
    match handshake(builder).await {
        Outcome::Connected(c) => {
            let _ = c.disconnect().await;
            panic!("connected, expected connect_error {message:?}");
        }
        // The code leads the message, as DESIGN §4 says (`<code>: <why>`).
        Outcome::Refused(msg) => assert!(msg.contains(message), "expected {message:?} in {msg:?}"),
    }
}

fn client(s: &Server) -> ClientBuilder {
    ClientBuilder::new(s.base()).namespace("/")
}

#[tokio::test]
async fn connects_with_auth_token() {
    let s = Server::start("").await;
    let acc = register(&s, &bare(), &unique("sock")).await;
    assert_connects(client(&s).auth(json!({"token": acc.token}))).await;
    // Clients that send the header form in `auth.token` work too.
    assert_connects(client(&s).auth(json!({"token": format!("Bearer {}", acc.token)}))).await;
}

#[tokio::test]
async fn connects_with_authorization_header() {
    let s = Server::start("").await;
    let acc = register(&s, &bare(), &unique("sock")).await;
    assert_connects(client(&s).opening_header("Authorization", format!("Bearer {}", acc.token))).await;
}

#[tokio::test]
async fn connects_with_the_session_cookie_alone() {
    let s = Server::start("").await;
    let acc = register(&s, &bare(), &unique("sock")).await;
    assert_connects(client(&s).opening_header("Cookie", acc.cookie.clone())).await;
}

#[tokio::test]
async fn refused_handshakes_get_connect_error_with_the_reason() {
    let s = Server::start("").await;
    let acc = register(&s, &bare(), &unique("sock")).await;

    assert_refused(client(&s), "unauthorized: authentication required").await;
    assert_refused(
        client(&s).auth(json!({"token": "garbage"})),
        "unauthorized: invalid token",
    )
    .await;
    assert_refused(client(&s).auth(json!({"token": 42})), "unauthorized: invalid token").await;
    assert_refused(
        client(&s).opening_header("Authorization", "Bearer a.b.c"),
        "unauthorized: invalid token",
    )
    .await;
    assert_refused(
        client(&s).opening_header("Cookie", "confab.sid=0123456789abcdef0123456789abcdef"),
        "unauthorized: session expired or invalid",
    )
    .await;

    // After logout, neither the token nor the cookie opens a socket.
    let r = bare()
        .post(s.url("/auth/logout"))
        .bearer_auth(&acc.token)
        .header("cookie", &acc.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_refused(
        client(&s).auth(json!({"token": acc.token})),
        "unauthorized: token revoked",
    )
    .await;
    assert_refused(
        client(&s).opening_header("Cookie", acc.cookie.clone()),
        "session expired or invalid",
    )
    .await;
}

#[tokio::test]
async fn expired_tokens_are_refused_at_the_handshake() {
    let opts = StartOptions::new("")
        .env("CONFAB_AUTH__JWT__TTL_SECS", "1")
        .env("CONFAB_AUTH__JWT__LEEWAY_SECS", "0");
    let s = Server::start_with(opts).await;
    let acc = register(&s, &bare(), &unique("sock")).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_refused(
        client(&s).auth(json!({"token": acc.token})),
        "token_expired: token expired",
    )
    .await;
}
