//! The realtime edge under abuse, through the real server: oversized WebSocket frames,
//! partial frames held open, sockets that never send the Socket.IO CONNECT, connection
//! caps, and a duplicate CONNECT. Each abuse costs its own connection only: a
//! well-behaved client beside it keeps sending and receiving.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::chat_support::{Sock, TOML, User, register};
use crate::support::Server;
use crate::support::raw::{self, closed_within, next_text, sio_connect, ws, ws_closed_within};

/// The chat test config with more `[server.socket]` settings.
fn with_socket(extra: &str) -> String {
    TOML.replace("[server.socket]\n", &format!("[server.socket]\n{extra}\n"))
}

/// A message round trip on a well-behaved pair: the server still serves everyone else.
async fn still_serves(s: &Server, from: &User, to: &User, text: &str) {
    let sender = Sock::connect(s, from).await;
    let mut receiver = Sock::connect(s, to).await;
    let ack = sender
        .ack("send_message", json!({"receiverId": to.id, "message": text}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(receiver.next("receive_message").await["message"], text);
    sender.close().await;
    receiver.close().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_that_socket_and_nothing_else() {
    let s = Server::start(&with_socket("max_payload = 16384")).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);

    // Before authentication: one frame over the limit ends that connection.
    let mut anon = ws(s.addr).await;
    anon.send(Message::text("4".repeat(20_000))).await.expect("send");
    assert!(
        ws_closed_within(&mut anon, Duration::from_secs(5)).await,
        "anonymous oversized frame"
    );

    // After authentication, the same; a frame under the limit is fine.
    let mut authed = ws(s.addr).await;
    let answer = sio_connect(&mut authed, &alice.token).await;
    assert!(answer.starts_with("40"), "{answer}");
    let fits = format!(
        "42{}",
        json!(["typing", {"to": bob.id, "isTyping": true, "pad": "x".repeat(8000)}])
    );
    authed.send(Message::text(fits)).await.expect("send");
    assert!(
        !ws_closed_within(&mut authed, Duration::from_millis(300)).await,
        "a frame under the limit"
    );
    authed.send(Message::text("4".repeat(20_000))).await.expect("send");
    assert!(
        ws_closed_within(&mut authed, Duration::from_secs(5)).await,
        "authenticated oversized frame"
    );

    still_serves(&s, &alice, &bob, "after the oversized frames").await;
}

#[tokio::test]
async fn partial_large_frames_cost_no_memory() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let before = raw::rss_kib(s.pid());
    // Each announces a 15 MiB frame and starts sending it; the server refuses the header
    // (over max_payload) and closes, instead of buffering what arrives.
    const N: usize = 40;
    let mut conns = Vec::new();
    for _ in 0..N {
        let mut tcp = raw::tcp_from([127, 0, 0, 1], s.addr).await.expect("connect");
        let status = raw::upgrade(&mut tcp, s.addr).await.expect("upgrade");
        assert!(status.contains("101"), "{status}");
        tcp.write_all(&raw::text_frame_header(15 << 20)).await.expect("header");
        // Up to 1 MiB of the payload, as far as the server lets us.
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..16 {
            if tcp.write_all(&chunk).await.is_err() {
                break;
            }
        }
        conns.push(tcp);
    }
    let mut closed = 0;
    for tcp in &mut conns {
        if closed_within(tcp, Duration::from_secs(5)).await {
            closed += 1;
        }
    }
    let after = raw::rss_kib(s.pid());
    println!("partial frames: {N} connections, RSS {before} KiB -> {after} KiB, {closed} closed by the server");
    assert_eq!(closed, N, "every connection announcing an oversized frame is closed");
    // A generous bound: correctness, not a benchmark (BENCHMARKS.md has the figure).
    assert!(after < before + 64 * 1024, "RSS grew from {before} KiB to {after} KiB");
    still_serves(&s, &alice, &bob, "after the partial frames").await;
}

#[tokio::test]
async fn a_socket_without_connect_is_closed_after_the_timeout() {
    let s = Server::start(&with_socket("connect_timeout_secs = 1")).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let started = Instant::now();
    let mut idle = ws(s.addr).await;
    assert!(
        ws_closed_within(&mut idle, Duration::from_secs(10)).await,
        "a socket that never sends CONNECT is closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "not before the timeout: {waited:?}"
    );
    // One that connects in time stays.
    let mut ok = ws(s.addr).await;
    assert!(sio_connect(&mut ok, &alice.token).await.starts_with("40"));
    assert!(
        !ws_closed_within(&mut ok, Duration::from_millis(1500)).await,
        "a connected socket stays"
    );
    still_serves(&s, &alice, &bob, "after the idle socket").await;
}

/// `confab_open_connections`, read over the harness client's pooled connection (which
/// is one of them).
async fn open_connections(s: &Server) -> usize {
    let text = s.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("confab_open_connections "))
        .and_then(|n| n.trim().parse().ok())
        .expect("confab_open_connections in /metrics")
}

#[tokio::test]
async fn connection_caps_refuse_and_recover() {
    const TOTAL: usize = 6;
    let caps = format!("[server]\nmax_connections = {TOTAL}\nmax_connections_per_ip = 2\n");
    let s = Server::start(&format!("{caps}{TOML}")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(raw::tcp_from([127, 0, 0, 2], s.addr).await.expect("connect"));
    }
    // A third from the same address is closed on accept.
    let mut third = raw::tcp_from([127, 0, 0, 2], s.addr).await.expect("tcp connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "per-address cap"
    );
    // Fill up to the total from other addresses (the harness's own connection counts).
    let mut from = 3;
    while open_connections(&s).await < TOTAL {
        held.push(raw::tcp_from([127, 0, 0, from], s.addr).await.expect("connect"));
        from += 1;
    }
    let mut over = raw::tcp_from([127, 0, 0, from], s.addr).await.expect("tcp connect");
    assert!(closed_within(&mut over, Duration::from_secs(5)).await, "total cap");
    // Places come back as connections close.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_connections(&s).await > 1 {
        assert!(Instant::now() < deadline, "closed connections give their places back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = raw::tcp_from([127, 0, 0, 2], s.addr).await.expect("connect");
    assert!(
        !closed_within(&mut again, Duration::from_millis(300)).await,
        "accepted again"
    );
    let metrics = s.get_text("/metrics").await;
    let refused = |reason: &str| -> u64 {
        let prefix = format!("confab_connections_refused_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(refused("per_ip"), 1, "{metrics}");
    // The harness client's own reconnects may hit the total cap too, never zero times.
    assert!(refused("total") >= 1, "{metrics}");
}

#[tokio::test]
async fn a_duplicate_connect_changes_nothing() {
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut watcher = Sock::connect(&s, &alice).await;
    let ack = watcher.ack("subscribe_presence", json!({"userIds": [bob.id]})).await;
    assert_eq!(ack["states"][0]["online"], false, "{ack}");

    let mut bob_raw = ws(s.addr).await;
    assert!(sio_connect(&mut bob_raw, &bob.token).await.starts_with("40"));
    assert_eq!(watcher.next("presence").await["online"], true);
    // A second CONNECT on the same connection: before socketioxide 0.18.9 it ran the
    // handshake again and replaced the socket without its disconnect handler, so bob's
    // presence count never came back down.
    bob_raw
        .send(Message::text(format!("40{}", json!({"token": bob.token}))))
        .await
        .expect("send");
    let _ = next_text(&mut bob_raw, Duration::from_millis(500)).await;
    drop(bob_raw);
    let off = watcher
        .try_next("presence", Duration::from_secs(10))
        .await
        .expect("bob goes offline once his only connection is gone");
    assert_eq!(off["online"], false, "{off}");
    let (_, state) =
        crate::chat_support::call(&s, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
    assert_eq!(state["online"], false, "{state}");
}
