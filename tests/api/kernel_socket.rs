//! The kernel's Socket.IO host through a real client: events work from the first moment
//! after the handshake, a disabled plugin has no socket events, a missing dependency
//! stops the boot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::Payload;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::chat_support::{TOML, register};
use crate::support::{Server, StartOptions};

async fn connect(s: &Server, token: &str) -> Client {
    let (tx, rx) = oneshot::channel::<()>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let client = ClientBuilder::new(s.base())
        .auth(json!({ "token": token }))
        .reconnect(false)
        .on(rust_socketio::Event::Connect, move |_, _| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            async {}.boxed()
        })
        .connect()
        .await
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("connected in time")
        .unwrap();
    client
}

/// Emits once with an ack and waits for it; `None` if no ack arrives in time.
async fn ack_once(c: &Client, event: &str, data: Value) -> Option<Value> {
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    c.emit_with_ack(event, data, Duration::from_secs(3), move |p, _| {
        if let (Some(tx), Payload::Text(mut v)) = (tx.lock().unwrap().take(), p) {
            let first = if v.is_empty() { Value::Null } else { v.swap_remove(0) };
            let _ = tx.send(match first {
                Value::Array(mut a) if a.len() == 1 => a.swap_remove(0),
                other => other,
            });
        }
        async {}.boxed()
    })
    .await
    .expect("emit");
    tokio::time::timeout(Duration::from_secs(3), rx).await.ok()?.ok()
}

#[tokio::test]
async fn an_event_emitted_right_after_connecting_is_handled() {
    let s = Server::start(TOML).await;
    let u = register(&s, "early").await;
    // Without waiting for anything but the connect event: handlers must already be there.
    for _ in 0..10 {
        let c = connect(&s, &u.token).await;
        let ack = ack_once(&c, "sync", json!({"limit": 1}))
            .await
            .expect("the first event is acked");
        assert_eq!(ack["ok"], true, "{ack}");
        c.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn unknown_events_are_refused_and_the_socket_stays_usable() {
    let s = Server::start(TOML).await;
    let u = register(&s, "unknown").await;
    let c = connect(&s, &u.token).await;
    let ack = ack_once(&c, "no_such_event", json!({})).await.expect("ack");
    assert_eq!(ack["ok"], false);
    assert_eq!(ack["error"]["code"], "not_found");
    let ack = ack_once(&c, "another_invented_event", json!({})).await.expect("ack");
    assert_eq!(ack["ok"], false);
    let metrics = s.get_text("/metrics").await;
    assert!(metrics.contains("confab_open_sockets 1"), "{metrics}");
    // Invented names share one label value: clients cannot grow the metrics.
    assert!(
        metrics.contains("confab_socket_events_total{event=\"unknown\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("no_such_event"), "{metrics}");
    let ack = ack_once(&c, "sync", json!({})).await.expect("still answers");
    assert_eq!(ack["ok"], true);
}

#[tokio::test]
async fn handled_events_are_timed_by_name() {
    let s = Server::start(TOML).await;
    let u = register(&s, "timed").await;
    let c = connect(&s, &u.token).await;
    for _ in 0..2 {
        let ack = ack_once(&c, "sync", json!({"limit": 1})).await.expect("ack");
        assert_eq!(ack["ok"], true, "{ack}");
    }
    // The ack goes out inside the handler, the timing is taken once it ends.
    let count = "confab_socket_event_duration_seconds_count{event=\"sync\"} 2";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut metrics = s.get_text("/metrics").await;
    while !metrics.contains(count) && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        metrics = s.get_text("/metrics").await;
    }
    assert!(metrics.contains(count), "{metrics}");
    assert!(
        metrics.contains("confab_socket_event_duration_seconds_bucket{event=\"sync\",le=\"+Inf\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("confab_socket_event_duration_seconds_count{event=\"send_message\"} 0"),
        "every handled event has its histogram from the start: {metrics}"
    );
}

#[tokio::test]
async fn a_disabled_plugin_has_no_socket_events_and_no_routes() {
    let s = Server::start(&format!("{TOML}\n[chat]\nenabled = false\n")).await;
    let u = register(&s, "nochat").await;
    let c = connect(&s, &u.token).await;
    let ack = ack_once(&c, "send_message", json!({"receiverId": u.id, "message": "hi"}))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "not_found", "{ack}");
    let r = s
        .http
        .get(s.url(&format!("/chats/{}/conversations", u.id)))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Auth, which chat needed, is still there.
    assert_eq!(
        s.http
            .get(s.url("/auth/me"))
            .bearer_auth(&u.token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_plugin_whose_dependency_is_disabled_stops_the_boot() {
    let err = match Server::try_start(StartOptions::new("[auth]\nenabled = false\n")).await {
        Ok(_) => panic!("booted without chat's dependency"),
        Err(out) => out,
    };
    assert!(err.starts_with("exit exit status: 2"), "{err}");
    assert!(
        err.contains("plugin `chat` needs plugin `auth`, which is disabled"),
        "{err}"
    );
    // `config check` says the same without serving.
    let out = crate::support::run_cli(
        &["config", "check", "--config", "confab.toml"],
        "[auth]\nenabled = false\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs plugin `auth`"));
    // With chat off as well, the same server boots.
    let s = Server::start("[auth]\nenabled = false\n[chat]\nenabled = false\n[presence]\nenabled = false\n").await;
    assert_eq!(s.http.get(s.url("/auth/me")).send().await.unwrap().status(), 404);
}
