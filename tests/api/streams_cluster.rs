//! Streams across two nodes: a Redis outage in the middle of traffic loses no message for
//! a receiver on the other node. Node B cannot hear node A's messages while Redis is down;
//! once it is back, both nodes close the sockets that may have missed some, and a client
//! that syncs from its last position after reconnecting has every one, once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::chat_support::{User, register};
use crate::cluster::{OwnRedis, Redis, log_count, toml, wait_ready};
use crate::support::raw::{Ws, emit_ack, next_text, sio_connect, ws};
use crate::support::{Server, StartOptions, note, unique};

async fn connect(s: &Server, user: &User) -> Ws {
    let mut w = ws(s.addr).await;
    let answer = sio_connect(&mut w, &user.token).await;
    assert!(answer.starts_with("40"), "{answer}");
    w
}

/// `receive_message` events (pos -> message id) until the socket closes; `false` if it
/// was still open after `idle` without one.
async fn read_live(mut w: Ws, idle: Duration) -> (BTreeMap<u64, String>, bool) {
    let mut got = BTreeMap::new();
    loop {
        let Some(t) = next_text(&mut w, idle).await else {
            return (
                got,
                crate::support::raw::ws_closed_within(&mut w, Duration::from_millis(100)).await,
            );
        };
        if let Some(body) = t.strip_prefix("42")
            && let Ok(Value::Array(v)) = serde_json::from_str::<Value>(body)
            && v.first() == Some(&json!("receive_message"))
        {
            let pos = v[1]["pos"].as_u64().expect("pos");
            let id = v[1]["_id"].as_str().expect("_id").to_owned();
            if let Some(before) = got.insert(pos, id.clone()) {
                assert_eq!(before, id, "one position, one message");
            }
        }
    }
}

/// Waits until node `s` has logged a line starting with `message`.
async fn wait_log(s: &Server, message: &str) {
    let mut logs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while log_count(s, &mut logs, message) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no {message:?} log: {logs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_during_traffic_loses_no_message_for_a_receiver_on_the_other_node() {
    let mut redis = OwnRedis::start();
    let prefix = format!("confab-it:{}:", unique(""));
    let config = format!(
        "{}\n[ratelimit]\nenabled = false\n",
        toml(&Redis::Single(redis.url()), &prefix, 30)
    );
    let db = TempDir::new().unwrap();
    let path = db.path().join("shared.db").to_string_lossy().into_owned();
    let start = || Server::start_with(StartOptions::new(&config).env("CONFAB_STORAGE__SQLITE__PATH", path.clone()));
    let (a, b) = (start().await, start().await);
    let (alice, bob) = (register(&a, "alice").await, register(&a, "bob").await);
    // Quiet for long stretches while Redis is down (and on the slow MongoDB test server):
    // the reader waits for the close, not for silence.
    let live = tokio::spawn(read_live(connect(&b, &bob).await, Duration::from_secs(60)));

    // Alice sends from node A over REST (stateless: her own sockets are not the point),
    // each message acked, until told to stop.
    let (acked, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let sender = tokio::spawn({
        let url = a.url(&format!("/chats/{}/send", alice.id));
        let (token, to, acked, stop) = (alice.token.clone(), bob.id.clone(), acked.clone(), stop.clone());
        async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Acquire) {
                let n = acked.load(Ordering::Acquire) + 1;
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"receiverId": to, "message": format!("message {n}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
                acked.store(n, Ordering::Release);
            }
        }
    });
    let reach = |n: u64| {
        let acked = acked.clone();
        async move {
            while acked.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    reach(50).await;
    redis.kill();
    wait_ready(&a, 503).await;
    wait_ready(&b, 503).await;
    let at_outage = acked.load(Ordering::Acquire);
    reach(at_outage + 50).await;
    redis.restart();
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let at_return = acked.load(Ordering::Acquire);
    reach(at_return + 50).await;
    stop.store(true, Ordering::Release);
    sender.await.unwrap();
    let total = acked.load(Ordering::Acquire);

    let (got_live, closed) = live.await.unwrap();
    assert!(closed, "node B closed bob's socket once fan-out was back");
    // Node B closed its sockets on its own recovery; node A asks every node to close the
    // sockets of the users it could not publish to. Like any client, bob reconnects and
    // syncs again if his socket is closed meanwhile.
    wait_log(&b, "fan-out is back").await;
    wait_log(&a, "asked every node to resync").await;
    let mut last = 0;
    while got_live.contains_key(&(last + 1)) {
        last += 1;
    }
    let mut all = got_live.clone();
    let mut after = last;
    let mut reconnects = 0;
    'connect: loop {
        reconnects += 1;
        assert!(reconnects <= 5, "bob could not sync");
        let mut again = connect(&b, &bob).await;
        for id in 1.. {
            let Some(page) = emit_ack(&mut again, id, "sync", json!({"afterPos": after, "limit": 200})).await else {
                continue 'connect;
            };
            for m in page["messages"].as_array().expect("messages") {
                let (pos, id) = (m["pos"].as_u64().unwrap(), m["_id"].as_str().unwrap().to_owned());
                if let Some(before) = all.insert(pos, id.clone()) {
                    assert_eq!(before, id, "live and synced agree on position {pos}");
                }
                after = pos;
            }
            if page["hasMore"] == false {
                assert_eq!(page["headPos"].as_u64(), Some(total), "{page}");
                break 'connect;
            }
        }
    }
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "every acked message, once, in order"
    );
    note(&format!(
        "streams across a redis outage: {total} messages acked on node A ({} while Redis was down); \
         bob on node B got {} live, held 1..={last} without a gap, was closed, synced {} ({reconnects} connection(s)): 0 missing, 0 duplicates",
        at_return - at_outage,
        got_live.len(),
        total - last
    ));
}
