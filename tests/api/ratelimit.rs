//! The ratelimit plugin through the real server: each limit trips at exactly its burst,
//! recovers after its interval, is shared by two nodes on Redis, ignores a forged
//! `X-Forwarded-For`, refuses sockets without disconnecting them (until they go far past
//! the limit), and the daily quota starts again at the day boundary (moved clock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::chat_support::{PASSWORD, Sock, TOML, call, register};
use crate::support::{Server, StartOptions, unique};

/// Tight limits; `extra` adds keys to `[ratelimit]` (before the rule tables).
fn toml(extra: &str, rules: &str) -> String {
    format!("{TOML}\n[ratelimit]\n{extra}\n{rules}")
}

const LOGIN_RULES: &str = r#"
[[ratelimit.rules]]
name = "login_username"
targets = ["route:POST /auth/login"]
key = "username"
rate = "30/min"
burst = 3

[[ratelimit.rules]]
name = "register_ip"
targets = ["route:POST /auth/register"]
key = "ip"
rate = "10/min"
burst = 4
"#;

async fn login(s: &Server, username: &str, xff: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(s.url("/auth/login"))
        .json(&json!({"username": username, "password": "wrong password"}));
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.send().await.unwrap()
}

async fn register_as(s: &Server, xff: &str) -> u16 {
    reqwest::Client::new()
        .post(s.url("/auth/register"))
        .header("x-forwarded-for", xff)
        .json(&json!({"username": unique("rl"), "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a 429 with the error body and every header.
async fn assert_limited(r: reqwest::Response, limit: u64) {
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(header(&r, "ratelimit-limit"), limit.to_string());
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    assert!(header(&r, "ratelimit-reset").parse::<u64>().unwrap() >= 1);
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert!(body["message"].as_str().unwrap().contains("login_username") || body["message"].is_string());
    assert!(body["retryAfterMs"].as_u64().unwrap() >= 1, "{body}");
}

#[tokio::test]
async fn ratelimit_login_per_username_trips_at_the_burst_and_recovers() {
    let s = Server::start(&toml("", LOGIN_RULES)).await;
    let name = unique("victim");
    for left in [2, 1, 0] {
        let r = login(&s, &name, None).await;
        assert_eq!(r.status().as_u16(), 401, "within the burst the handler answers");
        assert_eq!(header(&r, "ratelimit-limit"), "3");
        assert_eq!(header(&r, "ratelimit-remaining"), left.to_string());
    }
    assert_limited(login(&s, &name, None).await, 3).await;
    // The same name in another case is the same account; another name is not limited.
    assert_eq!(login(&s, &name.to_uppercase(), None).await.status().as_u16(), 429);
    assert_eq!(login(&s, &unique("other"), None).await.status().as_u16(), 401);
    // One interval (2 s) later, exactly one more attempt.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(login(&s, &name, None).await.status().as_u16(), 401);
    assert_eq!(login(&s, &name, None).await.status().as_u16(), 429);
}

#[tokio::test]
async fn ratelimit_ignores_forwarded_for_from_an_untrusted_peer() {
    let s = Server::start(&toml("", LOGIN_RULES)).await;
    // Each request claims another client; the peer (127.0.0.1) is not trusted.
    for i in 0..4 {
        assert_eq!(register_as(&s, &format!("203.0.113.{i}")).await, 201);
    }
    assert_eq!(
        register_as(&s, "203.0.113.99").await,
        429,
        "the forged header changed nothing"
    );

    // Behind a trusted proxy, the forwarded address is the client.
    let behind_proxy = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
        toml("", LOGIN_RULES)
    );
    let s = Server::start(&behind_proxy).await;
    for _ in 0..4 {
        assert_eq!(register_as(&s, "198.51.100.1").await, 201);
    }
    assert_eq!(register_as(&s, "198.51.100.1").await, 429);
    assert_eq!(
        register_as(&s, "198.51.100.2").await,
        201,
        "another client behind the proxy"
    );
}

const SEND_RULES: &str = r#"
[[ratelimit.rules]]
name = "send"
targets = ["route:POST /chats/{userId}/send", "event:send_message"]
key = "user"
rate = "1/s"
burst = 3

[[ratelimit.rules]]
name = "typing"
targets = ["event:typing"]
key = "user"
rate = "10/min"
burst = 2
"#;

fn msg(to: &str, text: &str) -> Value {
    json!({"receiverId": to, "message": text})
}

#[tokio::test]
async fn ratelimit_socket_events_are_refused_with_retry_after_and_the_socket_stays() {
    let s = Server::start(&toml("disconnect_factor = 0", SEND_RULES)).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let a = Sock::connect(&s, &alice).await;
    for i in 0..3 {
        let ack = a.ack("send_message", msg(&bob.id, &format!("m{i}"))).await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let no = a.ack("send_message", msg(&bob.id, "m3")).await;
    assert_eq!(no["ok"], false);
    assert_eq!(no["error"]["code"], "rate_limited", "{no}");
    let retry = no["error"]["retryAfterMs"].as_u64().unwrap();
    assert!((1..=1_000).contains(&retry), "{no}");
    // REST sends count in the same bucket.
    let (status, body) = call(
        &s,
        Some(&alice),
        "POST",
        &format!("/chats/{}/send", alice.id),
        Some(msg(&bob.id, "r")),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    // Typing has its own limit; without an ack the refusal is an `error` event.
    let mut a = a;
    for _ in 0..2 {
        assert_eq!(
            a.ack("typing", json!({"to": bob.id, "isTyping": true})).await["ok"],
            true
        );
    }
    a.emit("typing", json!({"to": bob.id, "isTyping": true})).await;
    let err = a.next("error").await;
    assert_eq!(err["code"], "rate_limited", "{err}");
    assert!(err["retryAfterMs"].as_u64().is_some(), "{err}");
    // Still connected: after the interval, exactly one more send.
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    assert_eq!(a.ack("send_message", msg(&bob.id, "later")).await["ok"], true);
    assert_eq!(a.ack("send_message", msg(&bob.id, "again")).await["ok"], false);
    // The refused messages were never stored.
    let (_, history) = call(
        &s,
        Some(&alice),
        "GET",
        &format!("/chats/{}/with/{}", alice.id, bob.id),
        None,
    )
    .await;
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["message"].as_str())
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2", "later"]);
}

#[tokio::test]
async fn ratelimit_a_socket_far_past_its_limit_is_disconnected() {
    let s = Server::start(&toml("disconnect_factor = 2", SEND_RULES)).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let mut a = Sock::connect(&s, &alice).await;
    for _ in 0..2 {
        a.ack("typing", json!({"to": bob.id, "isTyping": true})).await;
    }
    // burst 2 × factor 2: the fourth refusal in a row disconnects.
    for i in 0..3 {
        let no = a.ack("typing", json!({"to": bob.id, "isTyping": true})).await;
        assert_eq!(no["error"]["code"], "rate_limited", "refusal {i}: {no}");
    }
    let last = a.ack("typing", json!({"to": bob.id, "isTyping": true})).await;
    assert_eq!(last["error"]["code"], "rate_limited");
    let notice = a.next("error").await;
    assert!(notice["message"].as_str().unwrap().contains("disconnected"), "{notice}");
    // The server closed the socket: nothing it sends arrives any more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = a.client.emit("send_message", msg(&bob.id, "x")).await;
    assert!(a.try_next("message_sent", Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn ratelimit_daily_quota_resets_at_the_day_boundary() {
    // Move the server's quota clock to 3 s before a UTC midnight.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let to_midnight = 86_400_000 - now.rem_euclid(86_400_000);
    let offset_secs = (to_midnight - 3_000) / 1000;
    let quota = r#"
[[ratelimit.quotas]]
name = "messages_per_day"
targets = ["route:POST /chats/{userId}/send", "event:send_message"]
key = "user"
per_day = 2
"#;
    let s = Server::start(&toml(&format!("clock_offset_secs = {offset_secs}\nrules = []"), quota)).await;
    let started = std::time::Instant::now();
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let a = Sock::connect(&s, &alice).await;
    assert_eq!(a.ack("send_message", msg(&bob.id, "1")).await["ok"], true);
    let (status, r) = call(
        &s,
        Some(&alice),
        "POST",
        &format!("/chats/{}/send", alice.id),
        Some(msg(&bob.id, "2")),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let no = a.ack("send_message", msg(&bob.id, "3")).await;
    assert_eq!(no["error"]["code"], "rate_limited", "{no}");
    let retry = no["error"]["retryAfterMs"].as_u64().unwrap();
    assert!(retry <= 4_000, "retry at midnight: {retry}");
    // Bob has a quota of his own.
    let b = Sock::connect(&s, &bob).await;
    assert_eq!(b.ack("send_message", msg(&alice.id, "hi")).await["ok"], true);
    tokio::time::sleep(Duration::from_millis(retry + 100)).await;
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(a.ack("send_message", msg(&bob.id, "new day")).await["ok"], true);
}

#[tokio::test]
async fn ratelimit_counts_are_shared_by_two_nodes_on_redis() {
    let db = TempDir::new().unwrap();
    let prefix = format!("confab-it:{}:", unique(""));
    let cfg = format!(
        "{}\n[cluster]\nbackend = \"redis\"\n\n[cluster.redis]\nkey_prefix = \"{prefix}\"\n",
        toml("", LOGIN_RULES)
    );
    let path = db.path().join("shared.db").to_string_lossy().into_owned();
    let a = Server::start_with(StartOptions::new(&cfg).env("CONFAB_STORAGE__SQLITE__PATH", path.clone())).await;
    let b = Server::start_with(StartOptions::new(&cfg).env("CONFAB_STORAGE__SQLITE__PATH", path)).await;
    let name = unique("shared");
    for node in [&a, &b, &a] {
        assert_eq!(login(node, &name, None).await.status().as_u16(), 401);
    }
    assert_limited(login(&b, &name, None).await, 3).await;
    assert_eq!(login(&a, &name, None).await.status().as_u16(), 429);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(login(&b, &name, None).await.status().as_u16(), 401, "recovered on both");
    assert_eq!(login(&a, &name, None).await.status().as_u16(), 429);
    // Clean up this test's keys.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn ratelimit_limits_are_documented_and_shown() {
    let s = Server::start(TOML).await;
    let doc: Value = reqwest::get(s.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/chats/{userId}/send", "post"),
        ("/auth/login", "post"),
        ("/auth/register", "post"),
    ] {
        let r = &doc["paths"][path][method]["responses"]["429"];
        assert!(
            r["description"].as_str().is_some_and(|d| d.contains("rate_limited")),
            "{path}: {r}"
        );
    }
    assert!(
        doc["x-rate-limits"]["event:send_message"].is_array(),
        "{}",
        doc["x-rate-limits"]
    );
    let out = crate::support::run_cli(&["config", "show"], "", &[]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("[[ratelimit.rules]]") && shown.contains("name = \"send\""),
        "{shown}"
    );
    // Disabled, the plugin contributes nothing.
    let off = Server::start(&format!("{TOML}\n[ratelimit]\nenabled = false\n")).await;
    let doc: Value = reqwest::get(off.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/auth/login"]["post"]["responses"]["429"].is_null());
    assert!(doc.get("x-rate-limits").is_none());
}

#[tokio::test]
async fn ratelimit_socket_limits_on_redis_are_shared_and_keep_the_order() {
    let db = TempDir::new().unwrap();
    let prefix = format!("confab-it:{}:", unique(""));
    let cfg = format!(
        "{}\n[cluster]\nbackend = \"redis\"\n\n[cluster.redis]\nkey_prefix = \"{prefix}\"\n",
        toml("disconnect_factor = 0", SEND_RULES).replace("rate = \"1/s\"\nburst = 3", "rate = \"10/min\"\nburst = 30")
    );
    let path = db.path().join("shared.db").to_string_lossy().into_owned();
    let a = Server::start_with(StartOptions::new(&cfg).env("CONFAB_STORAGE__SQLITE__PATH", path.clone())).await;
    let b = Server::start_with(StartOptions::new(&cfg).env("CONFAB_STORAGE__SQLITE__PATH", path)).await;
    let (alice, bob) = (register(&a, "alice").await, register(&a, "bob").await);
    let (on_a, on_b) = (Sock::connect(&a, &alice).await, Sock::connect(&b, &alice).await);
    // Back to back on one socket: every check is a Redis round trip, the order is kept.
    for i in 0..19 {
        on_a.emit("send_message", msg(&bob.id, &format!("m{i:02}"))).await;
    }
    // Its ack comes after the 19 before it were handled (same socket, same order).
    assert_eq!(on_a.ack("send_message", msg(&bob.id, "m19")).await["ok"], true);
    for i in 20..30 {
        assert_eq!(
            on_b.ack("send_message", msg(&bob.id, &format!("m{i:02}"))).await["ok"],
            true
        );
    }
    let no = on_a.ack("send_message", msg(&bob.id, "over")).await;
    assert_eq!(
        no["error"]["code"], "rate_limited",
        "the burst of 30 is shared by both nodes: {no}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, history) = call(
        &a,
        Some(&alice),
        "GET",
        &format!("/chats/{}/with/{}", alice.id, bob.id),
        None,
    )
    .await;
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["message"].as_str())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    assert_eq!(texts, expected, "stored in send order");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn ratelimit_default_rules_bound_reads_but_let_a_reconnect_page_through_sync() {
    // The built-in rules, untouched.
    let s = Server::start(TOML).await;
    let (alice, bob) = (register(&s, "alice").await, register(&s, "bob").await);
    let sock = Sock::connect(&s, &alice).await;
    // A reconnecting client pages through thousands of missed messages, 500 a page: the
    // `reads` burst admits 100 pages at once.
    for page in 0..100 {
        let ack = sock.ack("sync", json!({"afterPos": page * 500, "limit": 500})).await;
        assert_eq!(ack["ok"], true, "sync page {page}: {ack}");
    }
    // A client hammering reads past that is refused soon (the bucket refills at 20/s
    // meanwhile), with the code, on the socket and on REST alike.
    let mut refused = None;
    for _ in 0..200 {
        let ack = sock.ack("fetch_history", json!({"withUser": bob.id})).await;
        if ack["ok"] == false {
            refused = Some(ack);
            break;
        }
    }
    let no = refused.expect("reads past the burst are refused");
    assert_eq!(no["error"]["code"], "rate_limited", "{no}");
    // On one kept-alive connection, faster than the bucket refills.
    let url = s.url(&format!("/chats/{}/conversations", alice.id));
    let mut limited = None;
    for _ in 0..500 {
        let r = s.http.get(&url).bearer_auth(&alice.token).send().await.unwrap();
        if r.status().as_u16() == 429 {
            limited = Some(r.json::<Value>().await.unwrap());
            break;
        }
    }
    let body = limited.expect("REST reads share the budget");
    assert_eq!(body["code"], "rate_limited", "{body}");
    // Presence lookups have their own budget.
    let (status, _) = call(&s, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
    assert_eq!(status, 200);
    sock.close().await;
}
