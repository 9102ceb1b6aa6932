//! Two real Confab processes sharing one SQLite file and one Redis (`[cluster] backend =
//! "redis"`, a key prefix per test): messages, sessions, logouts and presence cross
//! nodes; a killed node's users go offline within the heartbeat TTL; a Redis restart is
//! survived without restarting Confab (on a Redis of the test's own: the shared one on
//! 6379 is never stopped).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::auth::{bare, register as register_with_cookie};
use crate::chat_support::{Sock, TOML, User, call, register};
use crate::support::{Server, StartOptions, unique};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
const REDIS_CLUSTER_VAR: &str = "CONFAB_TEST_REDIS_CLUSTER";

/// The Redis a test's nodes share: one server, or a Redis Cluster by its seed nodes.
#[derive(Clone, Debug)]
pub(crate) enum Redis {
    Single(String),
    Cluster(Vec<String>),
}

impl Redis {
    fn shared() -> Redis {
        Redis::Single(SHARED_REDIS.into())
    }

    fn toml(&self) -> String {
        match self {
            Redis::Single(url) => format!("url = \"{url}\"\n"),
            Redis::Cluster(urls) => {
                let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
                format!("cluster_urls = [{}]\n", quoted.join(", "))
            }
        }
    }
}

/// The shared Redis, then the Redis Cluster tests/run.sh started (or a `skipped:` line).
fn every_redis(test: &str) -> Vec<Redis> {
    let mut all = vec![Redis::shared()];
    match std::env::var(REDIS_CLUSTER_VAR) {
        Ok(urls) if !urls.is_empty() => all.push(Redis::Cluster(urls.split(',').map(str::to_owned).collect())),
        _ => crate::support::storage::skip(&format!("{test} on a redis cluster: set {REDIS_CLUSTER_VAR}")),
    }
    all
}

struct Cluster {
    a: Server,
    b: Server,
    prefix: String,
    redis: Redis,
    _db: TempDir,
}

pub(crate) fn toml(redis: &Redis, prefix: &str, ttl_secs: u64) -> String {
    format!(
        "{TOML}\n[cluster]\nbackend = \"redis\"\n\n[cluster.redis]\n{}key_prefix = \"{prefix}\"\n\
         heartbeat_ttl_secs = {ttl_secs}\ncommand_timeout_ms = 500\nconnect_timeout_ms = 500\n",
        redis.toml()
    )
}

impl Cluster {
    async fn start(redis: &Redis, ttl_secs: u64) -> Cluster {
        let db = TempDir::new().unwrap();
        let prefix = format!("confab-it:{}:", unique(""));
        let toml = toml(redis, &prefix, ttl_secs);
        let path = db.path().join("shared.db").to_string_lossy().into_owned();
        let a = Server::start_with(StartOptions::new(&toml).env("CONFAB_STORAGE__SQLITE__PATH", path.clone())).await;
        let b = Server::start_with(StartOptions::new(&toml).env("CONFAB_STORAGE__SQLITE__PATH", path)).await;
        Cluster {
            a,
            b,
            prefix,
            redis: redis.clone(),
            _db: db,
        }
    }

    async fn cleanup(&self) {
        delete_keys(&self.redis, &self.prefix).await;
    }
}

/// Deletes a test's keys (never FLUSHDB: other tests share the Redis). On a cluster,
/// `KEYS` asks every master and `DEL` is split by slot.
pub(crate) async fn delete_keys(redis: &Redis, prefix: &str) {
    async fn on(mut conn: impl redis::aio::ConnectionLike, prefix: &str) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
    match redis {
        Redis::Single(url) => {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(conn) = client.get_multiplexed_async_connection().await
            {
                on(conn, prefix).await;
            }
        }
        Redis::Cluster(urls) => {
            if let Ok(client) = redis::cluster::ClusterClient::new(urls.clone())
                && let Ok(conn) = client.get_async_connection().await
            {
                on(conn, prefix).await;
            }
        }
    }
}

/// Every `event` up to and including the one carrying message `text`.
async fn until(sock: &mut Sock, event: &str, text: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let v = sock.next(event).await;
        got.push(v["message"].as_str().unwrap_or_default().to_owned());
        if v["message"] == text {
            return got;
        }
    }
}

/// Waits for `event` carrying message `text`, skipping others.
async fn wait_message(sock: &mut Sock, event: &str, text: &str) -> Value {
    loop {
        let v = sock.next(event).await;
        if v["message"] == text {
            return v;
        }
    }
}

#[tokio::test]
async fn cluster_message_reaches_every_socket_on_the_other_node_exactly_once() {
    for redis in every_redis("two-node delivery") {
        let c = Cluster::start(&redis, 30).await;
        let (alice, bob) = (register(&c.a, "alice").await, register(&c.b, "bob").await);
        let alice_on_a = Sock::connect(&c.a, &alice).await;
        let mut alice_on_b = Sock::connect(&c.b, &alice).await;
        let mut bob1 = Sock::connect(&c.b, &bob).await;
        let mut bob2 = Sock::connect(&c.b, &bob).await;

        let ack = alice_on_a
            .ack("send_message", json!({"receiverId": bob.id, "message": "across"}))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        // A REST send from node A goes the same way.
        let path = format!("/chats/{}/send", alice.id);
        let (status, _) = call(
            &c.a,
            Some(&alice),
            "POST",
            &path,
            Some(json!({"receiverId": bob.id, "message": "marker"})),
        )
        .await;
        assert_eq!(status, 201);

        // Delivery keeps per-sender order, so once the marker is in, everything sent before
        // it has arrived: each of bob's sockets got the message exactly once.
        for sock in [&mut bob1, &mut bob2] {
            assert_eq!(until(sock, "receive_message", "marker").await, ["across", "marker"]);
        }
        assert_eq!(
            until(&mut alice_on_b, "message_sent", "marker").await,
            ["across", "marker"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        for sock in [&mut bob1, &mut bob2] {
            assert!(sock.drain("receive_message").is_empty(), "no late duplicate");
        }
        assert!(alice_on_b.drain("message_sent").is_empty(), "no late duplicate");
        c.cleanup().await;
    }
}

#[tokio::test]
async fn cluster_sessions_and_logouts_cross_nodes() {
    for redis in every_redis("two-node sessions") {
        let c = Cluster::start(&redis, 30).await;
        let acct = register_with_cookie(&c.a, &bare(), &unique("carl")).await;
        let me = |s: &Server, header: (&'static str, String)| {
            let req = bare().get(s.url("/auth/me")).header(header.0, header.1);
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let cookie = ("cookie", acct.cookie.clone());
        let bearer = ("authorization", format!("Bearer {}", acct.token));
        assert_eq!(
            me(&c.b, cookie.clone()).await.0,
            200,
            "a session cookie issued by A works on B"
        );
        assert_eq!(me(&c.b, bearer.clone()).await.0, 200);

        let r = bare()
            .post(c.a.url("/auth/logout"))
            .header("cookie", acct.cookie.clone())
            .bearer_auth(&acct.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let (status, body) = me(&c.b, cookie).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some("session expired or invalid")),
            "{body}"
        );
        let (status, body) = me(&c.b, bearer).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some("token revoked")),
            "{body}"
        );
        c.cleanup().await;
    }
}

#[tokio::test]
async fn cluster_presence_set_on_one_node_is_seen_on_the_other() {
    for redis in every_redis("two-node presence") {
        let c = Cluster::start(&redis, 30).await;
        let (alice, bob) = (register(&c.a, "alice").await, register(&c.a, "bob").await);
        let mut watcher = Sock::connect(&c.a, &alice).await;
        let ack = watcher.ack("subscribe_presence", json!({"userIds": [bob.id]})).await;
        assert_eq!(ack["states"][0]["online"], false, "{ack}");

        let bob_on_b = Sock::connect(&c.b, &bob).await;
        let on = watcher.next("presence").await;
        assert_eq!(
            (on["userId"].as_str(), on["online"].as_bool()),
            (Some(bob.id.as_str()), Some(true)),
            "{on}"
        );
        let (_, state) = call(&c.a, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
        assert_eq!(state["online"], true, "{state}");

        // A second device on A, then both close: offline only after the last, seen from A.
        let bob_on_a = Sock::connect(&c.a, &bob).await;
        // The connect hook runs just after the handshake: let it count the socket first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        bob_on_b.close().await;
        assert!(
            watcher.try_next("presence", Duration::from_millis(500)).await.is_none(),
            "still online on A"
        );
        bob_on_a.close().await;
        let off = watcher.next("presence").await;
        assert_eq!(off["online"], false, "{off}");
        assert!(off["lastSeen"].is_string(), "{off}");
        let (_, state) = call(&c.b, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
        assert_eq!(state, off, "B answers the same");
        c.cleanup().await;
    }
}

#[tokio::test]
async fn cluster_killed_node_users_go_offline_within_the_ttl() {
    let ttl = 2;
    let c = Cluster::start(&Redis::shared(), ttl).await;
    let (alice, bob) = (register(&c.a, "alice").await, register(&c.a, "bob").await);
    let mut watcher = Sock::connect(&c.a, &alice).await;
    watcher.ack("subscribe_presence", json!({"userIds": [bob.id]})).await;
    let _bob_on_b = Sock::connect(&c.b, &bob).await;
    assert_eq!(watcher.next("presence").await["online"], true);

    let Cluster {
        a,
        b,
        prefix,
        redis,
        _db,
    } = c;
    let killed = tokio::time::Instant::now();
    b.kill();
    // The TTL, plus one sweep interval (a third of it), plus slack for a loaded machine.
    let within = Duration::from_secs(ttl) + Duration::from_millis(ttl * 1000 / 3) + Duration::from_secs(2);
    let off = watcher
        .try_next("presence", within)
        .await
        .unwrap_or_else(|| panic!("bob still online {:?} after node B was killed", killed.elapsed()));
    assert_eq!(
        (off["userId"].as_str(), off["online"].as_bool()),
        (Some(bob.id.as_str()), Some(false)),
        "{off}"
    );
    assert!(off["lastSeen"].is_string(), "{off}");
    assert!(
        killed.elapsed() >= Duration::from_millis(ttl * 1000 - 500),
        "not before the TTL: {:?}",
        killed.elapsed()
    );
    let (_, state) = call(&a, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
    assert_eq!(state["online"], false, "{state}");
    drop(a);
    delete_keys(&redis, &prefix).await;
}

/// A `redis-server` of the test's own, on a free port, without persistence.
pub(crate) struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub(crate) fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis { port, child: None };
        r.restart();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tests/run.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn ready(s: &Server) -> (u16, Value) {
    let r = bare().get(s.url("/ready")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn wait_ready(s: &Server, want: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = ready(s).await;
        if status == want {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "/ready stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log lines whose message starts with `message` (not those that quote it in a field).
pub(crate) fn log_count(s: &Server, logs: &mut Vec<String>, message: &str) -> usize {
    logs.extend(s.logs());
    let needle = format!("\"message\":\"{message}");
    logs.iter().filter(|l| l.contains(&needle)).count()
}

async fn send_ok(sock: &Sock, to: &User, text: &str) {
    let ack = sock
        .ack("send_message", json!({"receiverId": to.id, "message": text}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
}

/// Waits until every node heartbeat under `prefix` is past its deadline (Redis time).
async fn until_nodes_expired(prefix: &str) {
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}{{presence}}:nodes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        let now_ms = secs * 1000 + micros / 1000;
        let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(now_ms)
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .unwrap();
        if live.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node heartbeats never expired: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_started_after_another_died_still_announces_later_deaths() {
    // A node that boots while a dead node's users are still listed finds them in its first
    // sweep; that sweep once ran before the socket namespace existed, panicked, and the
    // node never swept again.
    let ttl = 2;
    let redis = Redis::shared();
    let db = TempDir::new().unwrap();
    let prefix = format!("confab-it:{}:", unique(""));
    let toml = toml(&redis, &prefix, ttl);
    let path = db.path().join("shared.db").to_string_lossy().into_owned();
    let node = || StartOptions::new(&toml).env("CONFAB_STORAGE__SQLITE__PATH", path.clone());

    let first = Server::start_with(node()).await;
    let (alice, bob, carol) = (
        register(&first, "alice").await,
        register(&first, "bob").await,
        register(&first, "carol").await,
    );
    let _bob_on_first = Sock::connect(&first, &bob).await;
    let (_, state) = call(
        &first,
        Some(&alice),
        "GET",
        &format!("/users/{}/presence", bob.id),
        None,
    )
    .await;
    assert_eq!(state["online"], true, "{state}");
    first.kill();
    until_nodes_expired(&prefix).await;

    let watching = Server::start_with(node()).await;
    let dying = Server::start_with(node()).await;
    let mut watcher = Sock::connect(&watching, &alice).await;
    watcher.ack("subscribe_presence", json!({"userIds": [carol.id]})).await;
    let _carol = Sock::connect(&dying, &carol).await;
    assert_eq!(watcher.next("presence").await["online"], true);
    dying.kill();
    let within = Duration::from_secs(ttl) + Duration::from_millis(ttl * 1000 / 3) + Duration::from_secs(3);
    let off = watcher
        .try_next("presence", within)
        .await
        .expect("carol's node died and the node that watches her never said she went offline");
    assert_eq!(
        (off["userId"].as_str(), off["online"].as_bool()),
        (Some(carol.id.as_str()), Some(false)),
        "{off}"
    );
    let panics: Vec<String> = watching.logs().into_iter().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "{panics:?}");
    drop(watching);
    delete_keys(&redis, &prefix).await;
}

#[tokio::test]
async fn cluster_survives_a_redis_restart() {
    let mut redis = OwnRedis::start();
    let c = Cluster::start(&Redis::Single(redis.url()), 30).await;
    let (alice, bob) = (register(&c.a, "alice").await, register(&c.a, "bob").await);
    let alice_on_a = Sock::connect(&c.a, &alice).await;
    let mut bob_on_a = Sock::connect(&c.a, &bob).await;
    let mut bob_on_b = Sock::connect(&c.b, &bob).await;
    send_ok(&alice_on_a, &bob, "before").await;
    wait_message(&mut bob_on_b, "receive_message", "before").await;

    redis.kill();
    let body = wait_ready(&c.a, 503).await;
    // Which check fails, not why: the reason (with the backend's address) is only logged.
    assert_eq!(body["checks"]["redis"], "failing", "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no backend address leaks: {body}"
    );
    wait_ready(&c.b, 503).await;

    // What does not need Redis still works: storage, local delivery, token checks.
    send_ok(&alice_on_a, &bob, "during").await;
    wait_message(&mut bob_on_a, "receive_message", "during").await;
    let (status, history) = call(
        &c.a,
        Some(&alice),
        "GET",
        &format!("/chats/{}/with/{}", alice.id, bob.id),
        None,
    )
    .await;
    assert_eq!((status, history.as_array().map(Vec::len)), (200, Some(2)), "{history}");
    // What does, answers 503 at once rather than hanging.
    let started = tokio::time::Instant::now();
    let (status, body) = call(&c.a, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    for _ in 0..5 {
        send_ok(&alice_on_a, &bob, "noise").await;
    }

    redis.restart();
    wait_ready(&c.a, 200).await;
    wait_ready(&c.b, 200).await;

    // Each node missed the other's messages meanwhile: it closed its sockets so that their
    // clients sync (streams_cluster.rs checks they recover every message). Sockets that
    // connect after that hear the fan-out, which resubscribed by itself.
    let mut logs = [Vec::new(), Vec::new()];
    for (node, logs) in [&c.a, &c.b].into_iter().zip(&mut logs) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while log_count(node, logs, "fan-out is back") == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no resync: {logs:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop((alice_on_a, bob_on_b));
    let alice_on_a = Sock::connect(&c.a, &alice).await;
    let mut bob_on_b = Sock::connect(&c.b, &bob).await;
    send_ok(&alice_on_a, &bob, "after").await;
    wait_message(&mut bob_on_b, "receive_message", "after").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, state) = call(&c.a, Some(&alice), "GET", &format!("/users/{}/presence", bob.id), None).await;
        if status == 200 && state["online"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence not restored: {status} {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One log line per outage and per recovery, not one per request.
    for (s, logs) in [&c.a, &c.b].into_iter().zip(&mut logs) {
        assert_eq!(log_count(s, logs, "redis unavailable"), 1, "{logs:#?}");
        assert_eq!(log_count(s, logs, "redis available again"), 1, "{logs:#?}");
    }
    c.cleanup().await;
}

#[tokio::test]
async fn cluster_logout_on_one_node_ends_the_sockets_on_the_other() {
    use crate::support::raw::{emit_ack, next_event, next_text, sio_connect, ws};
    for redis in every_redis("two-node logout") {
        let c = Cluster::start(&redis, 30).await;
        let acct = register_with_cookie(&c.a, &bare(), &unique("dana")).await;
        let mut on_b = ws(c.b.addr).await;
        assert!(sio_connect(&mut on_b, &acct.token).await.starts_with("40"));
        // The same user's other login, on the same node: its socket lives on.
        let other_token = crate::auth::login_token(&c.a, &acct.username).await;
        let mut other_on_b = ws(c.b.addr).await;
        assert!(sio_connect(&mut other_on_b, &other_token).await.starts_with("40"));
        let r = bare()
            .post(c.a.url("/auth/logout"))
            .bearer_auth(&acct.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let ended = next_event(&mut on_b, "session_ended", Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("{redis:?}: no session_ended on node B within 2 s"));
        assert_eq!(ended["code"], "logged_out", "{ended}");
        // Then node B's socket ends: the namespace DISCONNECT arrives (or the connection
        // closes), and nothing it sends is served any more.
        let mut disconnected = false;
        while let Some(t) = next_text(&mut on_b, Duration::from_secs(2)).await {
            if t.starts_with("41") {
                disconnected = true;
                break;
            }
        }
        let served = emit_ack(&mut on_b, 7, "sync", json!({"limit": 1})).await;
        assert!(
            served.is_none(),
            "{redis:?}: an ended socket is not served (disconnect packet: {disconnected})"
        );
        let ack = emit_ack(&mut other_on_b, 8, "sync", json!({"limit": 1})).await;
        assert_eq!(
            ack.as_ref().map(|a| a["ok"].clone()),
            Some(json!(true)),
            "{redis:?}: the user's other login keeps its socket: {ack:?}"
        );
        c.cleanup().await;
    }
}
