//! A socket fuzzer through the real server: for a bounded time, seeded generators send
//! malformed Engine.IO and Socket.IO traffic over WebSocket and long-polling (bad packet
//! types, truncated packets, invalid UTF-8, lying binary attachment counts, deep JSON,
//! huge numbers, wrong payload types for every event, events before CONNECT, duplicate
//! CONNECTs, out-of-range ack ids) while a well-behaved pair keeps chatting beside them.
//!
//! It passes when the server never exits, never panics, never answers 5xx, gives its
//! memory back once the fuzz sockets are gone, and the well-behaved receiver gets every
//! message, in order. `CONFAB_FUZZ_SECS` (default 45) bounds it, `CONFAB_FUZZ_SEED`
//! replays a run (the seed is printed either way); BENCHMARKS.md has a long run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::chat_support::{Sock, TOML, User, register};
use crate::support::Server;
use crate::support::raw::{self, Ws};

const EVENTS: &[&str] = &[
    "send_message",
    "fetch_history",
    "typing",
    "mark_read",
    "sync",
    "subscribe_presence",
    "unsubscribe_presence",
    "refresh_token",
    "no_such_event",
];

/// A JSON value of a random type and shape: what a confused or hostile client sends
/// where an event expects an object.
fn junk_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => json!("x".repeat(rng.random_range(0..3000))),
        5 => json!("24hexchars__000000000000"),
        6 if depth < 3 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| junk_value(rng, depth + 1))
                .collect(),
        ),
        _ if depth < 3 => {
            let keys = [
                "receiverId",
                "message",
                "withUser",
                "limit",
                "before",
                "after",
                "afterPos",
                "userIds",
                "to",
                "isTyping",
                "upTo",
                "clientMsgId",
                "token",
            ];
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                m.insert(keys[rng.random_range(0..keys.len())].into(), junk_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => json!({}),
    }
}

/// One malformed (or merely odd) Socket.IO-over-Engine.IO text packet.
fn junk_packet(rng: &mut StdRng, token: &str) -> String {
    let event = EVENTS[rng.random_range(0..EVENTS.len())];
    match rng.random_range(0..14) {
        // Unknown Engine.IO and Socket.IO packet types.
        0 => format!("{}{}", rng.random_range(7..10), rng.random_range(0..10)),
        // Truncated packets.
        1 => [
            "4",
            "42",
            "42[",
            "42[\"",
            "42[\"send_message\"",
            "42[\"send_message\",{",
            "40{",
            "4{",
        ][rng.random_range(0..8)]
        .into(),
        // Binary packets whose attachment count lies (none follow).
        2 => format!(
            "45{}-[\"{event}\",{{\"_placeholder\":true,\"num\":0}}]",
            rng.random_range(1..1_000_000u32)
        ),
        // Deep nesting.
        3 => format!(
            "42[\"{event}\",{}{}]",
            "[".repeat(rng.random_range(100..5000)),
            "]".repeat(rng.random_range(0..5000))
        ),
        // Huge and odd numbers.
        4 => format!(
            "42[\"{event}\",{{\"limit\":1e999,\"afterPos\":-99999999999999999999999,\"before\":18446744073709551616}}]"
        ),
        // Ack ids out of range.
        5 => format!(
            "42{}[\"{event}\",{{}}]",
            ["99999999999999999999999", "-1", "18446744073709551615", "0"][rng.random_range(0..4)]
        ),
        // Duplicate CONNECT, with a good or a bad token.
        6 => {
            let t = if rng.random() {
                token.to_owned()
            } else {
                "garbage".into()
            };
            format!("40{}", json!({ "token": t }))
        }
        // Other namespaces.
        7 => "40/admin,".into(),
        // Engine.IO noise: pings, pongs, upgrade packets, close.
        8 => ["2", "3", "5", "6", "2probe", "1"][rng.random_range(0..6)].into(),
        // Multibyte text cut at odd places (valid UTF-8 for the frame, broken JSON).
        9 => {
            let s = format!("42[\"{event}\",{{\"message\":\"héllo 你好 🙂\"}}]");
            let cut = rng.random_range(1..s.len());
            s[..s.floor_char_boundary(cut)].to_owned()
        }
        // Event packets with nonsense payload shapes, every event.
        _ => {
            let mut args = vec![json!(event)];
            for _ in 0..rng.random_range(0..3) {
                args.push(junk_value(rng, 0));
            }
            let ack = if rng.random() {
                rng.random_range(0..1000).to_string()
            } else {
                String::new()
            };
            format!("42{ack}{}", Value::Array(args))
        }
    }
}

/// Counters of one run.
#[derive(Default)]
struct Tally {
    sockets: AtomicU64,
    packets: AtomicU64,
    http: AtomicU64,
    server_errors: AtomicU64,
}

async fn fuzz_websocket(s: &Server, rng: &mut StdRng, token: &str, tally: &Tally) {
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{}{}", s.addr, raw::WS_PATH)),
    )
    .await
    else {
        return;
    };
    tally.sockets.fetch_add(1, Ordering::Relaxed);
    if rng.random_bool(0.7) {
        let _ = ws.send(Message::text(format!("40{}", json!({ "token": token })))).await;
    }
    for _ in 0..rng.random_range(1..40) {
        let msg = match rng.random_range(0..10) {
            // Invalid UTF-8 and random bytes as binary frames (attachments nobody announced).
            0 => Message::binary(
                (0..rng.random_range(1..200))
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>(),
            ),
            _ => Message::text(junk_packet(rng, token)),
        };
        tally.packets.fetch_add(1, Ordering::Relaxed);
        if ws.send(msg).await.is_err() {
            return; // closed by the server: a fine answer to garbage
        }
    }
    drain(&mut ws).await;
}

/// Reads what the server says for a moment, so its writes do not stall, then closes.
async fn drain(ws: &mut Ws) {
    let _ = raw::next_text(ws, Duration::from_millis(20)).await;
    let _ = ws.close(None).await;
}

async fn fuzz_polling(s: &Server, rng: &mut StdRng, token: &str, tally: &Tally) {
    let http = reqwest::Client::new();
    let url = s.url("/socket.io/?EIO=4&transport=polling");
    let Ok(Ok(open)) = tokio::time::timeout(Duration::from_secs(5), http.get(&url).send()).await else {
        return;
    };
    count(tally, open.status().as_u16());
    let body = open.text().await.unwrap_or_default();
    let sid = serde_json::from_str::<Value>(body.trim_start_matches('0'))
        .ok()
        .and_then(|v| v["sid"].as_str().map(str::to_owned));
    tally.sockets.fetch_add(1, Ordering::Relaxed);
    // Sometimes a made-up session id.
    let sid = match sid {
        Some(sid) if rng.random_bool(0.9) => sid,
        _ => "AAAAAAAAAAAAAAAAAAAA".into(),
    };
    let session = format!("{url}&sid={sid}");
    for _ in 0..rng.random_range(1..10) {
        let packets: Vec<String> = (0..rng.random_range(1..5)).map(|_| junk_packet(rng, token)).collect();
        tally.packets.fetch_add(packets.len() as u64, Ordering::Relaxed);
        let body = packets.join("\u{1e}");
        match tokio::time::timeout(Duration::from_secs(5), http.post(&session).body(body).send()).await {
            Ok(Ok(r)) => count(tally, r.status().as_u16()),
            _ => return,
        }
    }
    // One read of what the session holds, without waiting a ping interval for it.
    if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(200), http.get(&session).send()).await {
        count(tally, r.status().as_u16());
    }
}

fn count(tally: &Tally, status: u16) {
    tally.http.fetch_add(1, Ordering::Relaxed);
    if status >= 500 {
        tally.server_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The well-behaved pair: alice sends numbered messages with acks until told to stop;
/// returns how many were acked and checks bob received exactly those, in order.
async fn chat_beside(s: &Server, alice: &User, bob: &User, stop: Arc<AtomicBool>) -> usize {
    let sender = Sock::connect(s, alice).await;
    let mut receiver = Sock::connect(s, bob).await;
    let mut sent = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("steady {sent}");
        let ack = sender
            .ack("send_message", json!({"receiverId": bob.id, "message": text}))
            .await;
        assert_eq!(ack["ok"], true, "a well-behaved send fails under fuzzing: {ack}");
        let got = receiver.next("receive_message").await;
        assert_eq!(got["message"], text, "the well-behaved receiver missed or reordered");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.close().await;
    receiver.close().await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_sockets_cost_only_their_senders() {
    let secs: u64 = std::env::var("CONFAB_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("CONFAB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    // Written past the harness's capture, so a failure can be replayed.
    crate::support::note(&format!("fuzz: CONFAB_FUZZ_SEED={seed} CONFAB_FUZZ_SECS={secs}"));
    let mut s = Server::start(TOML).await;
    let (alice, bob, mallory) = (
        register(&s, "alice").await,
        register(&s, "bob").await,
        register(&s, "mallory").await,
    );
    let rss_before = raw::rss_kib(s.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let steady = {
        let stop = stop.clone();
        let s = &s;
        let (alice, bob) = (alice.clone(), bob.clone());
        async move { chat_beside(s, &alice, &bob, stop).await }
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers = (0..6u64).map(|w| {
        let tally = tally.clone();
        let token = mallory.token.clone();
        let s = &s;
        async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
            while Instant::now() < deadline {
                if rng.random_bool(0.75) {
                    fuzz_websocket(s, &mut rng, &token, &tally).await;
                } else {
                    fuzz_polling(s, &mut rng, &token, &tally).await;
                }
            }
        }
    });
    let fuzz = async {
        futures_util::future::join_all(workers).await;
        stop.store(true, Ordering::Relaxed);
    };
    let (sent, ()) = tokio::join!(steady, fuzz);

    assert!(s.try_status().is_none(), "the server exited during fuzzing");
    let health = s.http.get(s.url("/health")).send().await.expect("health after fuzzing");
    assert_eq!(health.status().as_u16(), 200);
    // The fuzz sockets are gone: memory comes back within a bound (allocator pages and
    // caches may stay; 64 MiB is far below what one leak per socket would hold).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rss_after = raw::rss_kib(s.pid());
    while rss_after > rss_before + 64 * 1024 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_after = raw::rss_kib(s.pid());
    }
    let panics = s
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect::<Vec<_>>();
    let t = &*tally;
    crate::support::note(&format!(
        "fuzz: seed {seed}, {secs} s, {} sockets, {} packets, {} HTTP answers ({} 5xx), {sent} steady messages, RSS {rss_before} -> {rss_after} KiB",
        t.sockets.load(Ordering::Relaxed),
        t.packets.load(Ordering::Relaxed),
        t.http.load(Ordering::Relaxed),
        t.server_errors.load(Ordering::Relaxed),
    ));
    assert!(panics.is_empty(), "the server panicked (seed {seed}): {panics:?}");
    assert_eq!(t.server_errors.load(Ordering::Relaxed), 0, "5xx answers (seed {seed})");
    assert!(sent > 0, "the well-behaved pair got nothing through (seed {seed})");
    assert!(
        rss_after <= rss_before + 64 * 1024,
        "RSS {rss_before} -> {rss_after} KiB (seed {seed})"
    );
}
