//! The SQLite storage backend: the shared contract suite, and what only SQLite promises
//! (migrations, WAL, group commit, several nodes on one file).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_contract::storage::{self as contract, ContractBackend};
use confab_sdk::clock::{SharedClock, SystemClock};
use confab_sdk::futures_util::future::{BoxFuture, join_all};
use confab_sdk::storage::{
    CommitObserver, Inserted, MessageStore, NewMessage, NewUser, PageQuery, StorageError, Stores, UserRecord, UserStore,
};
use confab_sqlite::{SqliteConfig, SqliteStore};
use tempfile::TempDir;

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn config(dir: &TempDir) -> SqliteConfig {
    // A nested path: open must create the missing directories.
    let path = dir.path().join("nested/data/confab.db");
    SqliteConfig {
        path: path.to_string_lossy().into_owned(),
        ..SqliteConfig::default()
    }
}

async fn open(cfg: &SqliteConfig) -> Arc<SqliteStore> {
    SqliteStore::open(cfg, clock(), None)
        .await
        .expect("open the sqlite store")
}

struct SqliteBackend {
    cfg: SqliteConfig,
}

impl ContractBackend for SqliteBackend {
    fn open(&self) -> BoxFuture<'_, Stores> {
        Box::pin(async move { Stores::of(open(&self.cfg).await) })
    }
}

async fn user(store: &SqliteStore, prefix: &str) -> UserRecord {
    let username = format!("{prefix}_{:08x}", rand::random::<u32>());
    store
        .create_user(NewUser {
            username,
            display_name: None,
            password_hash: "h".into(),
        })
        .await
        .expect("create_user")
}

fn msg(from: &UserRecord, to: &UserRecord, text: impl Into<String>, cid: Option<&str>) -> NewMessage {
    NewMessage {
        sender_id: from.id.clone(),
        receiver_id: to.id.clone(),
        message: text.into(),
        client_msg_id: cid.map(str::to_owned),
    }
}

fn latest(limit: usize) -> PageQuery {
    PageQuery {
        before: None,
        after: None,
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_passes_the_storage_contract() {
    let dir = TempDir::new().expect("tempdir");
    contract::run_all(&SqliteBackend { cfg: config(&dir) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_contract_with_one_message_batches() {
    // max_batch = 1 and one reader: the contract must not depend on batching or on
    // parallel reads.
    let dir = TempDir::new().expect("tempdir");
    let cfg = SqliteConfig {
        max_batch: 1,
        readers: 1,
        synchronous: "normal".into(),
        ..config(&dir)
    };
    contract::run_all(&SqliteBackend { cfg }).await;
}

#[tokio::test]
async fn sqlite_records_migrations_and_uses_wal() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let store = open(&cfg).await;
    user(&store, "mig").await;
    store.close().await;
    // Reopening must not migrate again or lose anything.
    let store = open(&cfg).await;
    assert!(store.user_by_username("nobody").await.expect("lookup").is_none());
    store.close().await;

    let conn = rusqlite::Connection::open(&cfg.path).expect("open the file directly");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, 5, "user_version records the applied migrations");
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal", "the database is in WAL mode");
    let users: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("count");
    assert_eq!(users, 1);
    let mut indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "cluster_state_expiry",
            "conversations_hi",
            "messages_client_msg_id",
            "messages_pair"
        ]
    );
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    open(&cfg).await.close().await;
    let conn = rusqlite::Connection::open(&cfg.path).expect("open");
    conn.pragma_update(None, "user_version", 99).expect("set user_version");
    drop(conn);
    let err = SqliteStore::open(&cfg, clock(), None)
        .await
        .expect_err("a newer schema must be refused");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn sqlite_open_rejects_an_invalid_config() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = SqliteConfig {
        max_batch: 0,
        synchronous: "off".into(),
        ..config(&dir)
    };
    let err = SqliteStore::open(&cfg, clock(), None)
        .await
        .expect_err("invalid config");
    let text = err.to_string();
    assert!(text.contains("max_batch") && text.contains("synchronous"), "{text}");
}

#[derive(Default)]
struct Commits {
    count: AtomicUsize,
    commands: AtomicUsize,
    largest: AtomicUsize,
}

fn observer(commits: &Arc<Commits>) -> CommitObserver {
    let commits = commits.clone();
    Arc::new(move |size, _latency| {
        commits.count.fetch_add(1, Ordering::Relaxed);
        commits.commands.fetch_add(size, Ordering::Relaxed);
        commits.largest.fetch_max(size, Ordering::Relaxed);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_group_commit_batches_concurrent_inserts() {
    const N: usize = 2000;
    let dir = TempDir::new().expect("tempdir");
    let commits = Arc::new(Commits::default());
    let cfg = SqliteConfig {
        max_batch: 256,
        ..config(&dir)
    };
    let store = SqliteStore::open(&cfg, clock(), Some(observer(&commits)))
        .await
        .expect("open");
    let (a, b) = (user(&store, "gc_a").await, user(&store, "gc_b").await);
    let before = commits.count.load(Ordering::Relaxed);

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (store, a, b) = (store.clone(), a.clone(), b.clone());
            tokio::spawn(async move { store.insert(msg(&a, &b, format!("{i}"), None)).await })
        })
        .collect();
    for t in join_all(tasks).await {
        t.expect("task").expect("insert");
    }
    let count = commits.count.load(Ordering::Relaxed) - before;
    let commands = commits.commands.load(Ordering::Relaxed);
    let largest = commits.largest.load(Ordering::Relaxed);
    println!("{N} concurrent inserts committed in {count} transactions (largest batch {largest})");
    assert_eq!(commands, N + 2, "the observer sees every command exactly once");
    assert!(
        count <= N / 10,
        "{N} concurrent inserts took {count} commits: group commit does not batch"
    );
    assert!(
        largest > 1 && largest <= 256,
        "batches respect max_batch (largest {largest})"
    );
    let (all, more) = store.since(&a.id, None, N + 1).await.expect("since");
    assert_eq!((all.len(), more), (N, false), "every insert is stored");
    store.close().await;
}

/// Which threads committed, by name ("confab-sqlite-writer" or the caller's).
fn committers(cfg: &SqliteConfig) -> (SqliteConfig, Arc<Mutex<Vec<String>>>, CommitObserver) {
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    let observer: CommitObserver = Arc::new(move |_, _| {
        let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
        seen.lock().unwrap().push(name);
    });
    (cfg.clone(), names, observer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_idle_writer_lets_the_caller_commit_and_a_busy_one_batches() {
    let dir = TempDir::new().expect("tempdir");
    let (cfg, names, observer) = committers(&config(&dir));
    let store = SqliteStore::open(&cfg, clock(), Some(observer)).await.expect("open");
    let (a, b) = (user(&store, "in_a").await, user(&store, "in_b").await);
    names.lock().unwrap().clear();
    // One at a time, paced like a moderate load (20 ms apart, far longer than a commit):
    // each write finds the writer idle and commits on the calling thread.
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store
            .insert(msg(&a, &b, format!("one {i}"), None))
            .await
            .expect("insert");
    }
    let alone = std::mem::take(&mut *names.lock().unwrap());
    assert_eq!(alone.len(), 20, "one commit per awaited write");
    let inline = alone.iter().filter(|n| *n != "confab-sqlite-writer").count();
    // A commit slower than the pace (a loaded machine) may still go to the writer thread.
    assert!(
        inline >= 15,
        "writes that find the writer idle commit on the caller's thread: {alone:?}"
    );
    // Called back to back without waiting: the first commits at once, the rest queue
    // behind it for the writer thread, and all keep their order.
    let burst: Vec<_> = (0..200)
        .map(|i| store.insert(msg(&a, &b, format!("burst {i}"), None)))
        .collect();
    for r in join_all(burst).await {
        r.expect("insert");
    }
    let queued = std::mem::take(&mut *names.lock().unwrap());
    assert!(
        queued.iter().any(|n| n == "confab-sqlite-writer") && queued.len() < 200,
        "a burst is batched by the writer thread: {} commits",
        queued.len()
    );
    let (all, _) = store.since(&a.id, None, 300).await.expect("since");
    let texts: Vec<String> = all.iter().map(|m| m.message.clone()).collect();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("one {i}"))
        .chain((0..200).map(|i| format!("burst {i}")))
        .collect();
    assert_eq!(texts, expected, "commits follow the order of the calls");
    store.close().await;

    // With synchronous = full every commit waits for an fsync: never on the caller's thread.
    let dir = TempDir::new().expect("tempdir");
    let full = SqliteConfig {
        synchronous: "full".into(),
        ..config(&dir)
    };
    let (cfg, names, observer) = committers(&full);
    let store = SqliteStore::open(&cfg, clock(), Some(observer)).await.expect("open");
    let (a, b) = (user(&store, "fs_a").await, user(&store, "fs_b").await);
    store.insert(msg(&a, &b, "synced", None)).await.expect("insert");
    let names = names.lock().unwrap().clone();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "confab-sqlite-writer"),
        "{names:?}"
    );
    store.close().await;
}

/// Writes that arrive one at a time, each queued before the previous one committed, but
/// far enough apart that a free writer commits each alone.
async fn paced_inserts(linger_us: u64) -> (usize, usize) {
    const N: usize = 300;
    let dir = TempDir::new().expect("tempdir");
    let commits = Arc::new(Commits::default());
    let cfg = SqliteConfig {
        linger_us,
        ..config(&dir)
    };
    let store = SqliteStore::open(&cfg, clock(), Some(observer(&commits)))
        .await
        .expect("open");
    let (a, b) = (user(&store, "lg_a").await, user(&store, "lg_b").await);
    let before = commits.count.load(Ordering::Relaxed);
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        pending.push(store.insert(msg(&a, &b, format!("{i}"), None)));
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    for p in join_all(pending).await {
        p.expect("insert");
    }
    let (all, _) = store.since(&a.id, None, N + 1).await.expect("since");
    assert_eq!(all.len(), N, "every insert is stored");
    store.close().await;
    (N, commits.count.load(Ordering::Relaxed) - before)
}

#[tokio::test]
async fn sqlite_linger_groups_writes_that_arrive_one_at_a_time() {
    // 1,000-2,000 writes a second with a 20 ms linger: tens of writes per commit.
    let (n, count) = paced_inserts(20_000).await;
    println!("{n} paced inserts with a 20 ms linger: {count} commits");
    assert!(
        count * 4 <= n,
        "{n} paced inserts took {count} commits: the linger does not group them"
    );
}

#[tokio::test]
async fn sqlite_refuses_writes_after_close() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&config(&dir)).await;
    let (a, b) = (user(&store, "cl_a").await, user(&store, "cl_b").await);
    store.close().await;
    let insert = store.insert(msg(&a, &b, "late", None)).await.map(|i| i.message.id);
    assert_eq!(insert, Err(StorageError::Closed), "insert after close");
    let create = store.create_user(NewUser {
        username: "late".into(),
        display_name: None,
        password_hash: "h".into(),
    });
    assert_eq!(
        create.await.map(|u| u.id),
        Err(StorageError::Closed),
        "create_user after close"
    );
    assert_eq!(store.set_password_hash(&a.id, "x").await, Err(StorageError::Closed));
    assert_eq!(
        store.mark_read(&a.id, &b.id, None).await.map(|r| r.unread),
        Err(StorageError::Closed)
    );
    assert_eq!(
        store.ping().await,
        Err(StorageError::Closed),
        "ping reports a closed store"
    );
    tokio::time::timeout(Duration::from_secs(5), store.close())
        .await
        .expect("a second close returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_queue_answers_busy() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = SqliteConfig {
        queue_capacity: 4,
        max_batch: 2,
        ..config(&dir)
    };
    let store = open(&cfg).await;
    let (a, b) = (user(&store, "q_a").await, user(&store, "q_b").await);
    let calls: Vec<_> = (0..2000)
        .map(|i| store.insert(msg(&a, &b, format!("{i}"), None)))
        .collect();
    let results = join_all(calls).await;
    let busy = results.iter().filter(|r| matches!(r, Err(StorageError::Busy))).count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy > 0, "a full queue must answer Busy");
    assert_eq!(
        ok + busy,
        results.len(),
        "every other insert succeeds: {:?}",
        results.iter().find(|r| r.is_err())
    );
    let (stored, _) = store.since(&a.id, None, 5000).await.expect("since");
    assert_eq!(stored.len(), ok, "exactly the accepted inserts are stored");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_write_failing_halfway_fails_alone() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let store = open(&cfg).await;
    let (a, b) = (user(&store, "half_a").await, user(&store, "half_b").await);
    let c = user(&store, "half_c").await;
    // Fails the conversation row of a pair's first message, after the message row was
    // written: only a rollback of that one command can keep the batch consistent.
    let conn = rusqlite::Connection::open(&cfg.path).expect("open");
    conn.execute_batch(&format!(
        "CREATE TRIGGER poison BEFORE INSERT ON conversations
         WHEN '{}' IN (NEW.pair_lo, NEW.pair_hi)
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        c.id
    ))
    .expect("create trigger");
    // Holding the write lock parks the writer on "first", so the next three calls queue
    // up behind it and are committed together, as one batch.
    conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    let first = store.insert(msg(&a, &b, "first", None));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let calls = vec![
        store.insert(msg(&a, &b, "before", None)),
        store.insert(msg(&a, &c, "poison", Some("p-1"))),
        store.insert(msg(&b, &a, "after", None)),
    ];
    conn.execute_batch("COMMIT").expect("release the write lock");
    first.await.expect("insert");
    let results = join_all(calls).await;
    assert!(
        results[0].is_ok() && results[2].is_ok(),
        "the other writes of the batch succeed: {results:?}"
    );
    assert!(
        matches!(results[1], Err(StorageError::Backend(_))),
        "the failing write fails: {:?}",
        results[1]
    );
    let stored = store.history(&a.id, &b.id, latest(10)).await.expect("history");
    let texts: Vec<&str> = stored.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(
        texts,
        ["first", "before", "after"],
        "nothing of the failed write remains"
    );
    assert!(
        store
            .history(&a.id, &c.id, latest(10))
            .await
            .expect("history")
            .is_empty()
    );
    assert!(
        store
            .conversations(&c.id, None, 1000)
            .await
            .expect("conversations")
            .is_empty()
    );
    let conv = store.conversations(&b.id, None, 1000).await.expect("conversations");
    assert_eq!(
        (conv[0].unread, &conv[0].last_message),
        (2, &stored[2]),
        "the conversation row stays consistent"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dropping_the_store_does_not_hang() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let store = open(&cfg).await;
    let (a, b) = (user(&store, "drop_a").await, user(&store, "drop_b").await);
    let pending: Vec<_> = (0..50)
        .map(|i| store.insert(msg(&a, &b, format!("{i}"), None)))
        .collect();
    drop(store);
    let results = tokio::time::timeout(Duration::from_secs(10), join_all(pending))
        .await
        .expect("queued inserts finish");
    assert!(
        results.iter().all(Result::is_ok),
        "inserts queued before the drop still commit"
    );
    let store = open(&cfg).await;
    let stored = store.history(&a.id, &b.id, latest(100)).await.expect("history");
    assert_eq!(stored.len(), 50);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retries_a_batch_while_another_connection_holds_the_lock() {
    let dir = TempDir::new().expect("tempdir");
    let cfg = SqliteConfig {
        busy_timeout_ms: 50,
        ..config(&dir)
    };
    let store = open(&cfg).await;
    let (a, b) = (user(&store, "busy_a").await, user(&store, "busy_b").await);

    let path = cfg.path.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        locked_tx.send(()).expect("signal");
        std::thread::sleep(Duration::from_millis(150));
        conn.execute_batch("COMMIT").expect("release the write lock");
    });
    locked_rx.recv().expect("lock taken");
    let inserted = store
        .insert(msg(&a, &b, "waited", None))
        .await
        .expect("insert succeeds once the lock is free");
    holder.join().expect("lock holder");
    assert!(inserted.created);
    let stored = store.history(&a.id, &b.id, latest(10)).await.expect("history");
    assert_eq!(stored.len(), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_nodes_share_one_file() {
    const EACH: usize = 150;
    let dir = TempDir::new().expect("tempdir");
    let cfg = config(&dir);
    let (node1, node2) = (open(&cfg).await, open(&cfg).await);

    let a = user(&node1, "node_a").await;
    let b = user(&node2, "node_b").await;
    let seen = node2
        .user_by_username(&a.username.to_uppercase())
        .await
        .expect("lookup")
        .expect("a seen by node 2");
    assert_eq!(seen, a, "a user created on one node is visible on the other");
    let dup = node2.create_user(NewUser {
        username: a.username.clone(),
        display_name: None,
        password_hash: "h".into(),
    });
    assert_eq!(
        dup.await.map(|u| u.id),
        Err(StorageError::Conflict("username is taken".into())),
        "uniqueness spans nodes"
    );

    // Both nodes write the same conversation at the same time, each for one direction.
    let writer = |node: Arc<SqliteStore>, from: UserRecord, to: UserRecord| {
        tokio::spawn(async move {
            for i in 0..EACH {
                node.insert(msg(&from, &to, format!("{}:{i}", &from.username[..6]), None))
                    .await
                    .expect("insert");
            }
        })
    };
    let t1 = writer(node1.clone(), a.clone(), b.clone());
    let t2 = writer(node2.clone(), b.clone(), a.clone());
    t1.await.expect("node 1 writer");
    t2.await.expect("node 2 writer");

    let on1 = node1
        .history(&a.id, &b.id, latest(1000))
        .await
        .expect("history on node 1");
    let on2 = node2
        .history(&b.id, &a.id, latest(1000))
        .await
        .expect("history on node 2");
    assert_eq!(on1.len(), 2 * EACH, "node 1 reads both nodes' messages");
    assert_eq!(on1, on2, "both nodes read the same conversation in the same order");
    for (from, prefix) in [(&a, &a.username[..6]), (&b, &b.username[..6])] {
        let texts: Vec<&str> = on1
            .iter()
            .filter(|m| m.sender_id == from.id)
            .map(|m| m.message.as_str())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{prefix}:{i}")).collect();
        assert_eq!(texts, expected, "each sender's order is kept across nodes");
    }
    let conv1 = node1.conversations(&a.id, None, 1000).await.expect("conversations");
    let conv2 = node2.conversations(&a.id, None, 1000).await.expect("conversations");
    assert_eq!(conv1, conv2);
    assert_eq!(
        conv1[0].unread, EACH as u64,
        "unread counts messages written by the other node"
    );
    assert_eq!(conv1[0].last_message, on1[2 * EACH - 1]);

    // The same clientMsgId on both nodes at once: stored once.
    let r1 = node1.insert(msg(&a, &b, "dup", Some("both-nodes")));
    let r2 = node2.insert(msg(&a, &b, "dup", Some("both-nodes")));
    let (r1, r2): (Inserted, Inserted) = (r1.await.expect("node 1"), r2.await.expect("node 2"));
    assert_eq!(r1.message, r2.message, "one message for one clientMsgId across nodes");
    assert!(r1.created != r2.created, "exactly one node created it");

    let read = node2.mark_read(&a.id, &b.id, None).await.expect("mark_read on node 2");
    assert_eq!(read.unread, 0);
    assert_eq!(
        node1.conversations(&a.id, None, 1000).await.expect("conversations")[0].unread,
        0,
        "read state is shared"
    );
    node1.close().await;
    node2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commit_observer_reports_latency() {
    let dir = TempDir::new().expect("tempdir");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let seen = latencies.clone();
    let observer: CommitObserver = Arc::new(move |size, latency| seen.lock().expect("lock").push((size, latency)));
    let store = SqliteStore::open(&config(&dir), clock(), Some(observer))
        .await
        .expect("open");
    let (a, b) = (user(&store, "lat_a").await, user(&store, "lat_b").await);
    store.insert(msg(&a, &b, "x", None)).await.expect("insert");
    store.close().await;
    let latencies = latencies.lock().expect("lock");
    assert_eq!(latencies.len(), 3, "one commit per awaited write: {latencies:?}");
    assert!(
        latencies
            .iter()
            .all(|(size, latency)| *size == 1 && *latency > Duration::ZERO)
    );
}
