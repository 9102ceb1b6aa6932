//! The MongoDB storage backend: the shared contract suite and the migration from the old
//! Express backend's database. They need a server: set `CONFAB_TEST_MONGO_URI` (e.g.
//! `mongodb://127.0.0.1:27017`); without it each test prints a `skipped:` line. Every run
//! uses a database of its own and drops it at the end.

use std::sync::{Arc, Mutex};

use confab::config::kernel::MongoConfig;
use confab::storage::MongoStore;
use confab::storage::contract::{self, ContractBackend};
use confab::storage::mongo::migrate;
use confab_sdk::clock::{SharedClock, SystemClock};
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::storage::{MessageStore, PageQuery, SharedMessageStore, SharedUserStore, UserStore};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};

const URI_VAR: &str = "CONFAB_TEST_MONGO_URI";

/// A config on a fresh database, or `None` (with the `skipped:` line) without a server.
fn config(test: &str) -> Option<MongoConfig> {
    let Ok(uri) = std::env::var(URI_VAR) else {
        println!("skipped: {test}: set {URI_VAR} to a MongoDB server to run the MongoDB storage tests");
        return None;
    };
    Some(MongoConfig {
        uri,
        database: format!("confab_test_{:016x}", rand::random::<u64>()),
        // A standalone test server has no replica set to wait for.
        w: "1".into(),
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
    fn open(&self) -> BoxFuture<'_, (SharedUserStore, SharedMessageStore)> {
        Box::pin(async move {
            let store = open(&self.cfg).await;
            *self.last.lock().expect("lock") = Some(store.clone());
            (store.clone() as SharedUserStore, store as SharedMessageStore)
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
    assert_eq!((first.users, first.messages), (2, 5), "{first:?}");
    let again = migrate::run(&cfg).await.expect("migrate again");
    assert_eq!((again.users, again.messages), (0, 0), "a second run has nothing to do");

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

#[test]
fn storage_config_accepts_mongodb_and_a_numeric_w() {
    use confab::config::StorageConfig;
    use confab_sdk::config::{RunProfile, parse_section};
    let profile = RunProfile {
        name: "production".into(),
    };
    let given = serde_json::json!({"backend": "mongodb", "mongodb": {"w": 1, "journal": false}});
    let cfg: StorageConfig = parse_section("storage", &given, &profile).expect("mongodb is a valid backend");
    assert_eq!((cfg.backend.as_str(), cfg.mongodb.w.as_str()), ("mongodb", "1"));
    let bad = serde_json::json!({"backend": "mongodb", "mongodb": {"lanes": 0}});
    let problems = parse_section::<StorageConfig>("storage", &bad, &profile).expect_err("zero lanes");
    assert_eq!(problems[0].key, "storage.mongodb.lanes");
}
