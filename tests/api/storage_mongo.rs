//! Selecting the MongoDB backend through the server's config (the backend itself is
//! tested in `backends/mongodb/tests`).

use crate::support::storage::{MONGO_STANDALONE_VAR, skip};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_mongodb_stops_the_boot_with_the_way_out() {
    let Ok(uri) = std::env::var(MONGO_STANDALONE_VAR) else {
        skip(&format!(
            "a_standalone_mongodb_stops_the_boot: set {MONGO_STANDALONE_VAR} to a standalone MongoDB server"
        ));
        return;
    };
    let boot = crate::support::Server::try_start(
        crate::support::StartOptions::new("")
            .env("CONFAB_STORAGE__BACKEND", "mongodb")
            .env("CONFAB_STORAGE__MONGODB__URI", uri)
            .env(
                "CONFAB_STORAGE__MONGODB__DATABASE",
                format!("confab_test_{:016x}", rand::random::<u64>()),
            ),
    )
    .await;
    let out = boot.err().expect("the server refuses to boot");
    assert!(
        out.contains("allow_standalone") && !out.contains("stack backtrace"),
        "{out}"
    );
}
