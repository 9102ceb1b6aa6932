//! A node cut off from Redis while the others still reach it: what it missed meanwhile
//! (revocations published by other nodes) is caught up once it is back, and its other
//! sockets are closed so that their clients sync the messages it could not relay.

use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::auth::{bare, register};
use crate::cluster::{Redis, delete_keys, toml, wait_ready};
use crate::support::proxy::Proxy;
use crate::support::raw::{Ws, emit_ack, next_event, sio_connect, ws, ws_closed_within};
use crate::support::{Server, StartOptions, unique};

async fn token_socket(s: &Server, token: &str) -> Ws {
    let mut w = ws(s.addr).await;
    let answer = sio_connect(&mut w, token).await;
    assert!(answer.starts_with("40"), "{answer}");
    w
}

#[tokio::test]
async fn a_node_cut_off_from_redis_ends_revoked_sockets_once_it_is_back() {
    let proxy = Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let prefix = format!("confab-it:{}:", unique(""));
    let db = TempDir::new().unwrap();
    let path = db.path().join("shared.db").to_string_lossy().into_owned();
    let direct = Redis::Single("redis://127.0.0.1:6379".into());
    let behind = Redis::Single(format!("redis://{}", proxy.addr));
    let start = |redis: &Redis| {
        let toml = toml(redis, &prefix, 30);
        let path = path.clone();
        async move { Server::start_with(StartOptions::new(&toml).env("CONFAB_STORAGE__SQLITE__PATH", path)).await }
    };
    let a = start(&direct).await;
    let b = start(&behind).await;
    let (alice, bob) = (
        register(&a, &bare(), &unique("alice")).await,
        register(&a, &bare(), &unique("bob")).await,
    );
    let mut alice_on_b = token_socket(&b, &alice.token).await;
    let mut bob_on_b = token_socket(&b, &bob.token).await;

    proxy.cut();
    wait_ready(&b, 503).await;
    // Node a still reaches Redis: the revocation is stored, the end of alice's sockets
    // published; node b hears none of it.
    let r = bare()
        .post(a.url("/auth/logout"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    proxy.restore();
    wait_ready(&b, 200).await;
    let ended = next_event(&mut alice_on_b, "session_ended", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("the revoked socket on node b ends once b is back: {:#?}", b.logs()));
    assert_eq!(ended["code"], "revoked", "{ended}");
    // Bob's credential stands, but node b missed what other nodes published meanwhile:
    // his socket is closed so that his client reconnects and syncs; it may connect again.
    assert!(
        ws_closed_within(&mut bob_on_b, Duration::from_secs(10)).await,
        "the sockets of a node back from an outage are closed to resync"
    );
    let mut bob_again = token_socket(&b, &bob.token).await;
    let ack = emit_ack(
        &mut bob_again,
        1,
        "typing",
        json!({"to": alice.user["id"], "isTyping": true}),
    )
    .await;
    assert_eq!(ack, Some(json!({"ok": true})), "bob's credential still stands");
    drop((a, b));
    delete_keys(&direct, &prefix).await;
}
