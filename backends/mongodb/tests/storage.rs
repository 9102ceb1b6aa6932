//! The MongoDB storage backend: the shared contract suite and the migration from the old
//! Express backend's database. They need a server: set `CONFAB_TEST_MONGO_URI` (e.g.
//! `mongodb://127.0.0.1:27017`); without it each test prints a `skipped:` line. Every run
//! uses a database of its own and drops it at the end.

use std::sync::{Arc, Mutex};

use confab_contract::storage::{self as contract, ContractBackend};
use confab_mongodb::{MongoConfig, MongoStore, migrate};
use confab_sdk::clock::{SharedClock, SystemClock};
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::storage::{MessageStore, PageQuery, Stores, UserStore};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};

/// Where tests/services.sh's SecantusDB replica set and standalone server listen.
const URI_VAR: &str = "CONFAB_TEST_MONGO_URI";
const MONGO_STANDALONE_VAR: &str = "CONFAB_TEST_MONGO_STANDALONE_URI";

fn skip(why: &str) {
    eprintln!("skipped: {why}");
}

/// A config on a fresh database, or `None` (with the `skipped:` line) without a server.
fn config(test: &str) -> Option<MongoConfig> {
    let Ok(uri) = std::env::var(URI_VAR) else {
        skip(&format!(
            "{test}: set {URI_VAR} to a MongoDB server to run the MongoDB storage tests"
        ));
        return None;
    };
    Some(MongoConfig {
        uri,
        database: format!("confab_test_{:016x}", rand::random::<u64>()),
        timeout_ms: 5000,
        ..MongoConfig::default()
    })
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

async fn open(cfg: &MongoConfig) -> Arc<MongoStore> {
    MongoStore::open(cfg, clock()).await.expect("open the mongodb store")
}

struct MongoBackend {
    cfg: MongoConfig,
    /// The last store opened, to drop the database at the end.
    last: Mutex<Option<Arc<MongoStore>>>,
}

impl ContractBackend for MongoBackend {
    fn open(&self) -> BoxFuture<'_, Stores> {
        Box::pin(async move {
            let store = open(&self.cfg).await;
            *self.last.lock().expect("lock") = Some(store.clone());
            Stores::of(store)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_passes_the_storage_contract() {
    let Some(cfg) = config("mongodb_passes_the_storage_contract") else {
        return;
    };
    let backend = MongoBackend {
        cfg,
        last: Mutex::new(None),
    };
    contract::run_all(&backend).await;
    let store = backend.last.lock().expect("lock").take().expect("a store was opened");
    store.drop_database().await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_contract_with_one_lane() {
    let Some(cfg) = config("mongodb_contract_with_one_lane") else {
        return;
    };
    let backend = MongoBackend {
        cfg: MongoConfig { lanes: 1, ..cfg },
        last: Mutex::new(None),
    };
    contract::run_all(&backend).await;
    let store = backend.last.lock().expect("lock").take().expect("a store was opened");
    store.drop_database().await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_migrates_the_old_backend_database() {
    let Some(cfg) = config("mongodb_migrates_the_old_backend_database") else {
        return;
    };
    let client = mongodb::Client::with_uri_str(&cfg.uri).await.expect("client");
    let db = client.database(&cfg.database);
    // What the Express backend left: Mongoose's collections, bcrypt hashes, string and
    // ObjectId user references, no clientMsgId, no read state.
    let (alice, bob) = (ObjectId::new(), ObjectId::new());
    let hash = bcrypt::hash("alice-password", 4).expect("bcrypt");
    let t = |ms: i64| DateTime::from_millis(1_600_000_000_000 + ms);
    db.collection("users")
        .insert_many([
            doc! {"_id": alice, "username": "Alice", "passwordHash": &hash, "displayName": "Alice",
            "createdAt": t(0), "updatedAt": t(0), "__v": 0},
            doc! {"_id": bob, "username": "bob", "passwordHash": bcrypt::hash("b", 4).expect("bcrypt"),
            "createdAt": t(1), "updatedAt": t(1), "__v": 0},
        ])
        .await
        .expect("old users");
    let old: Vec<_> = (0..5)
        .map(|i: i64| {
            let (from, to) = if i % 2 == 0 { (alice, bob) } else { (bob, alice) };
            let (from, to) = if i == 3 {
                (
                    mongodb::bson::Bson::String(from.to_hex()),
                    mongodb::bson::Bson::String(to.to_hex()),
                )
            } else {
                (from.into(), to.into())
            };
            doc! {"_id": ObjectId::new(), "senderId": from, "receiverId": to, "message": format!("old {i}"),
            "createdAt": t(1000 * i), "updatedAt": t(1000 * i), "__v": 0}
        })
        .collect();
    db.collection("chatmessages")
        .insert_many(old)
        .await
        .expect("old messages");

    let first = migrate::run(&cfg).await.expect("migrate");
    assert_eq!((first.users, first.messages, first.positioned), (2, 5, 5), "{first:?}");
    let again = migrate::run(&cfg).await.expect("migrate again");
    assert_eq!(
        (again.users, again.messages, again.positioned),
        (0, 0, 0),
        "a second run has nothing to do"
    );

    let store = open(&cfg).await;
    let user = store
        .user_by_username("ALICE")
        .await
        .expect("lookup")
        .expect("old user found by name");
    assert_eq!(user.id, alice.to_hex());
    assert!(bcrypt::verify("alice-password", &user.password_hash).expect("verify"));
    let page = store
        .history(
            &alice.to_hex(),
            &bob.to_hex(),
            PageQuery {
                limit: 10,
                ..PageQuery::default()
            },
        )
        .await
        .expect("history");
    let texts: Vec<&str> = page.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["old 0", "old 1", "old 2", "old 3", "old 4"]);
    let conv = store
        .conversations(&bob.to_hex(), None, 1000)
        .await
        .expect("conversations");
    assert_eq!(conv.len(), 1);
    assert_eq!((conv[0].last_message.message.as_str(), conv[0].unread), ("old 4", 0));
    let new = store
        .insert(confab_sdk::storage::NewMessage {
            sender_id: bob.to_hex(),
            receiver_id: alice.to_hex(),
            message: "new".into(),
            client_msg_id: None,
        })
        .await
        .expect("insert after migration");
    let page = store
        .history(
            &alice.to_hex(),
            &bob.to_hex(),
            PageQuery {
                limit: 2,
                ..PageQuery::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(page[1], new.message, "new messages follow the migrated ones");
    // The migrated messages took positions 1-5 of both streams, in their stored order;
    // the new one follows.
    for user in [alice.to_hex(), bob.to_hex()] {
        let stream = store.stream(&user, 0, 100).await.expect("stream");
        let got: Vec<(String, Option<u64>)> = stream
            .messages
            .into_iter()
            .map(|m| {
                let m = m.seen_by(&user);
                (m.message, m.pos)
            })
            .collect();
        let want: Vec<(String, Option<u64>)> = (0..5)
            .map(|i| (format!("old {i}"), Some(i + 1)))
            .chain([("new".to_owned(), Some(6))])
            .collect();
        assert_eq!((got, stream.head_pos), (want, 6), "{user}'s stream");
    }
    store.close().await;
    store.drop_database().await.expect("drop the test database");
}

#[test]
fn mongodb_config_problems_are_reported_by_key() {
    assert!(MongoConfig::default().problems().is_empty());
    let bad = MongoConfig {
        uri: "http://x".into(),
        database: "a.b".into(),
        w: " ".into(),
        timeout_ms: 0,
        lanes: 0,
        ..MongoConfig::default()
    };
    let keys: Vec<String> = bad.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["uri", "database", "w", "timeout_ms", "lanes"]);
}

/// Arms SecantusDB's (and mongod's) `failCommand` fail point for the clients of one
/// `appName` only, so tests running beside this one are not hit.
async fn fail_next(cfg: &MongoConfig, app: &str, command: &str, data: mongodb::bson::Document) {
    let client = mongodb::Client::with_uri_str(&cfg.uri).await.expect("client");
    let mut spec = doc! {"failCommands": [command], "appName": app};
    spec.extend(data);
    client
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": spec})
        .await
        .expect("configureFailPoint (secantusd-py --enable-test-commands)");
}

/// A config whose client names itself `app`, for [`fail_next`].
fn with_app(cfg: MongoConfig, app: &str) -> MongoConfig {
    let sep = if cfg.uri.contains('?') { '&' } else { '?' };
    MongoConfig {
        uri: format!("{}{sep}appName={app}", cfg.uri),
        ..cfg
    }
}

async fn two_users(store: &MongoStore) -> (String, String) {
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let u = store
            .create_user(confab_sdk::storage::NewUser {
                username: name.into(),
                display_name: None,
                password_hash: "x".into(),
            })
            .await
            .expect("create user");
        ids.push(u.id);
    }
    (ids.remove(0), ids.remove(0))
}

fn text(from: &str, to: &str, text: &str) -> confab_sdk::storage::NewMessage {
    confab_sdk::storage::NewMessage {
        sender_id: from.into(),
        receiver_id: to.into(),
        message: text.into(),
        client_msg_id: None,
    }
}

/// Every document of the database's messages and conversations, to compare before/after.
async fn snapshot(cfg: &MongoConfig) -> (Vec<mongodb::bson::Document>, Vec<mongodb::bson::Document>) {
    use confab_mongodb::queries::{CONVERSATIONS, MESSAGES};
    use confab_sdk::futures_util::TryStreamExt;
    let client = mongodb::Client::with_uri_str(&cfg.uri).await.expect("client");
    let db = client.database(&cfg.database);
    let all = |name: &'static str| {
        let db = db.clone();
        async move {
            let docs: Vec<mongodb::bson::Document> = db
                .collection::<mongodb::bson::Document>(name)
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await
                .expect("find")
                .try_collect()
                .await
                .expect("collect");
            docs
        }
    };
    (all(MESSAGES).await, all(CONVERSATIONS).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_a_message_commits_whole_or_not_at_all() {
    let Some(cfg) = config("mongodb_a_message_commits_whole_or_not_at_all") else {
        return;
    };
    let app = format!("confab-tx-{:08x}", rand::random::<u32>());
    let cfg = with_app(cfg, &app);
    let store = open(&cfg).await;
    let (alice, bob) = two_users(&store).await;
    let first = store.insert(text(&alice, &bob, "first")).await.expect("first insert");
    let before = snapshot(&cfg).await;

    // The summary update is the transaction's last write: when it fails, the counter and
    // the message written before it are rolled back with it.
    fail_next(&cfg, &app, "update", doc! {"errorCode": 2}).await;
    let err = store
        .insert(text(&alice, &bob, "lost"))
        .await
        .expect_err("a failed summary update fails the send");
    assert!(matches!(err, confab_sdk::storage::StorageError::Backend(_)), "{err:?}");
    assert_eq!(snapshot(&cfg).await, before, "an aborted send leaves nothing behind");

    // A transient error (a write conflict, as with another node's send to the pair) is
    // retried: the send succeeds, stored once.
    fail_next(
        &cfg,
        &app,
        "insert",
        doc! {"errorCode": 112, "errorLabels": ["TransientTransactionError"]},
    )
    .await;
    let second = store
        .insert(text(&bob, &alice, "second"))
        .await
        .expect("a transient error is retried");
    let page = store
        .history(
            &alice,
            &bob,
            PageQuery {
                limit: 10,
                ..PageQuery::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(
        page,
        [first.message, second.message],
        "stored once each, nothing of the failed send"
    );
    let conv = store.conversations(&alice, None, 10).await.expect("conversations");
    assert_eq!((conv[0].last_message.message.as_str(), conv[0].unread), ("second", 1));
    let (_, convs) = snapshot(&cfg).await;
    assert_eq!(
        convs[0].get_i64("seq"),
        Ok(2),
        "the aborted send took no sequence number"
    );
    store.close().await;
    store.drop_database().await.expect("drop the test database");
}

fn standalone(test: &str) -> Option<MongoConfig> {
    let cfg = config(test)?;
    let Ok(uri) = std::env::var(MONGO_STANDALONE_VAR) else {
        skip(&format!(
            "{test}: set {MONGO_STANDALONE_VAR} to a standalone MongoDB server"
        ));
        return None;
    };
    Some(MongoConfig { uri, ..cfg })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_standalone_is_refused_unless_allowed() {
    let Some(cfg) = standalone("mongodb_standalone_is_refused_unless_allowed") else {
        return;
    };
    let err = MongoStore::open(&cfg, clock())
        .await
        .expect_err("a standalone server is refused");
    let text = err.to_string();
    for needle in [
        "standalone",
        "--replSet",
        "rs.initiate()",
        "storage.mongodb.allow_standalone",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    // Opted in, the backend keeps its contract with separate writes.
    let backend = MongoBackend {
        cfg: MongoConfig {
            allow_standalone: true,
            ..cfg
        },
        last: Mutex::new(None),
    };
    contract::run_all(&backend).await;
    let store = backend.last.lock().expect("lock").take().expect("a store was opened");
    store.drop_database().await.expect("drop the test database");
}
