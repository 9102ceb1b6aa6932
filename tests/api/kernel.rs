//! The kernel through the real binary: health, errors, config layers and CLI, plugins
//! switched off, metrics, CORS, shutdown.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Server, StartOptions, run_cli};

async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "body: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {body}");
}

#[tokio::test]
async fn health_ready_and_request_ids() {
    let s = Server::start("").await;
    let r = s.http.get(s.url("/health")).send().await.unwrap();
    let id = r
        .headers()
        .get("x-request-id")
        .expect("request id")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(r.headers().get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(json(r).await, (200, serde_json::json!({"status": "ok"})));

    let r = s
        .http
        .get(s.url("/ready"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "trace-42");
    let (status, body) = json(r).await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"]["storage"], "ok");
    // The request id reaches the logs too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.logs().iter().any(|l| l.contains("trace-42")), "request id not logged");
}

#[tokio::test]
async fn fresh_run_creates_the_database_and_sigterm_exits_zero() {
    let dir = tempfile::TempDir::new().unwrap();
    let s = Server::start_with(
        StartOptions::new("")
            .data_dir(dir.path())
            .env("CONFAB_STORAGE__SQLITE__PATH", "data/confab.db"),
    )
    .await;
    if crate::support::storage::sqlite_only("fresh_run_creates_the_database: the file check") {
        assert!(
            dir.path().join("data/confab.db").is_file(),
            "data/confab.db not created"
        );
    }
    let status = s.stop().await;
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
}

#[tokio::test]
async fn errors_are_json_for_404_405_bad_json_and_oversized_bodies() {
    let s = Server::start("[server]\nbody_limit = 2048\n").await;
    let (status, body) = json(s.http.get(s.url("/no/such/route")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    let (status, body) = json(s.http.delete(s.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert_error(&body, "not_found");

    let bad = s
        .http
        .post(s.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = json(bad).await;
    assert_eq!(status, 400);
    assert_error(&body, "validation_failed");
    assert_eq!(body["field"], "body");

    let huge = format!("{{\"username\": \"{}\", \"password\": \"x\"}}", "a".repeat(4096));
    let r = s
        .http
        .post(s.url("/auth/register"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(status, 413);
    assert_error(&body, "payload_too_large");

    // The server is still fine after all that.
    assert_eq!(s.http.get(s.url("/health")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_disabled_plugin_contributes_no_routes() {
    let s = Server::start("[docs]\nenabled = false\n").await;
    assert_eq!(s.http.get(s.url("/openapi.json")).send().await.unwrap().status(), 404);
    assert_eq!(s.http.get(s.url("/health")).send().await.unwrap().status(), 200);
    drop(s);
    let s = Server::start("").await;
    let (status, doc) = json(s.http.get(s.url("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/health"].is_object());
}

#[tokio::test]
async fn environment_overrides_the_file() {
    let s =
        Server::start_with(StartOptions::new("[docs]\nenabled = false\n").env("CONFAB_DOCS__ENABLED", "true")).await;
    assert_eq!(s.http.get(s.url("/openapi.json")).send().await.unwrap().status(), 200);

    let out = run_cli(
        &["config", "show", "--config", "confab.toml"],
        "[server]\nport = 4000\n",
        &[("CONFAB_SERVER__PORT", "4100")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("port = 4100"), "{text}");
    // The old backend's PORT is an alias below CONFAB_ variables.
    let out = run_cli(&["config", "show", "--config", "confab.toml"], "", &[("PORT", "4555")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("port = 4555"));
    let out = run_cli(
        &["config", "show", "--config", "confab.toml"],
        "",
        &[("PORT", "4555"), ("CONFAB_SERVER__PORT", "4556")],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("port = 4556"));
}

#[tokio::test]
async fn config_check_lists_every_bad_key_without_a_backtrace() {
    let toml = "[server]\nport = \"high\"\nprot = 1\n\n[log]\nformat = \"xml\"\n\n[bogus]\nx = 1\n\n[docs]\nenabled = \"yes\"\n";
    let out = run_cli(
        &["config", "check", "--config", "confab.toml"],
        toml,
        &[("RUST_BACKTRACE", "1")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["server.port:", "server.prot:", "log.format:", "bogus:", "docs.enabled:"] {
        assert!(
            err.lines().any(|l| l.trim_start().starts_with(key)),
            "no line for {key} in:\n{err}"
        );
    }
    assert!(err.contains("u16"), "says what was expected:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");

    let out = run_cli(
        &["config", "check", "--config", "confab.toml"],
        "[server]\nport = 8080\n",
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // `serve` refuses the same file with the same status.
    let out = run_cli(&["serve", "--config", "confab.toml"], toml, &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_cli(&["config", "check", "--config", "missing.toml"], "", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[tokio::test]
async fn config_show_masks_secrets() {
    let out = run_cli(
        &["config", "show"],
        "",
        &[
            ("JWT_SECRET", "a-very-secret-value-nobody-may-see"),
            ("MONGO_URI", "mongodb://admin:hunter2@db:27017"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("a-very-secret-value"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("mongodb://********@db:27017"), "{text}");
}

#[tokio::test]
async fn a_misspelt_profile_is_refused_and_limits_are_bounded() {
    let out = run_cli(&["config", "check"], "", &[("CONFAB_PROFILE", "prod")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("profile") && err.contains("\"prod\""), "{err}");

    let toml = "[server]\nworker_threads = 5000\n[server.socket]\nmax_in_flight = 0\nping_timeout_secs = 0\n\
                [storage.sqlite]\nmax_batch = 100000000\nqueue_capacity = 100000000000\nlinger_us = 1000000\n";
    let out = run_cli(&["config", "check", "--config", "confab.toml"], toml, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.socket.max_in_flight:",
        "server.socket.ping_timeout_secs:",
        "storage.sqlite.max_batch:",
        "storage.sqlite.queue_capacity:",
        "storage.sqlite.linger_us:",
        "server.worker_threads:",
    ] {
        assert!(
            err.lines().any(|l| l.trim_start().starts_with(key)),
            "no line for {key} in:\n{err}"
        );
    }
    assert!(!err.contains("ping_interval"), "{err}");
}

#[tokio::test]
async fn the_old_backends_variables_select_mongodb_and_redis() {
    let env = [("MONGO_URI", "mongodb://db:27017"), ("REDIS_URL", "redis://cache:6379")];
    let out = run_cli(&["config", "show"], "", &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["storage"]["backend"].as_str(), Some("mongodb"), "{text}");
    assert_eq!(
        v["storage"]["mongodb"]["uri"].as_str(),
        Some("mongodb://db:27017"),
        "{text}"
    );
    assert_eq!(v["cluster"]["backend"].as_str(), Some("redis"), "{text}");
    assert_eq!(
        v["cluster"]["redis"]["url"].as_str(),
        Some("redis://cache:6379"),
        "{text}"
    );

    // An explicit CONFAB_ variable still decides.
    let env = [
        ("MONGO_URI", "mongodb://db:27017"),
        ("CONFAB_STORAGE__BACKEND", "sqlite"),
    ];
    let out = run_cli(&["config", "show"], "", &env);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["storage"]["backend"].as_str(), Some("sqlite"), "{text}");
}

#[tokio::test]
async fn metrics_count_requests_and_can_be_switched_off() {
    let s = Server::start("").await;
    for _ in 0..3 {
        s.http.get(s.url("/health")).send().await.unwrap();
    }
    let invented = reqwest::Method::from_bytes(b"INVENTED").unwrap();
    s.http.request(invented, s.url("/health")).send().await.unwrap();
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("confab_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("confab_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 3"),
        "{text}"
    );
    assert!(
        !text.contains("INVENTED"),
        "invented methods share one label value: {text}"
    );
    assert!(text.contains("method=\"OTHER\""), "{text}");
    assert!(text.contains("confab_open_sockets 0"));
    assert!(text.contains("confab_storage_commit_seconds_count"));
    drop(s);
    let s = Server::start("[server]\nmetrics = false\n").await;
    assert_eq!(s.http.get(s.url("/metrics")).send().await.unwrap().status(), 404);
    drop(s);

    // On a listener of its own (as the production profile does on loopback): not on the
    // public port any more.
    let s = Server::start("[server]\nmetrics_addr = \"127.0.0.1:0\"\n").await;
    assert_eq!(s.http.get(s.url("/metrics")).send().await.unwrap().status(), 404);
    let addr = s
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "metrics listening")
        .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
        .expect("the metrics listener logs its address");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("confab_open_sockets"), "{text}");
}

#[tokio::test]
async fn cors_follows_the_config() {
    let s = Server::start("[server.cors]\nallowed_origins = [\"https://app.example\"]\n").await;
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/auth/login"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    // Browsers may read the headers of the enabled plugins, and only theirs.
    let exposed = |r: &reqwest::Response| {
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        exposed(&r),
        "x-request-id, x-has-more, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset"
    );
    let without =
        Server::start("[server.cors]\nallowed_origins = [\"https://app.example\"]\n\n[ratelimit]\nenabled = false\n")
            .await;
    let r = without
        .http
        .get(without.url("/health"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        exposed(&r),
        "x-request-id, x-has-more",
        "no ratelimit headers without the plugin"
    );
    let r = s
        .http
        .get(s.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_bad_bind_address_or_port_fails_cleanly() {
    let out = run_cli(
        &["config", "check", "--config", "confab.toml"],
        "[server]\nhost = \"not an ip\"\nport = 70000\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.host:") && err.contains("server.port:"), "{err}");
}

#[tokio::test]
async fn config_default_toml_equals_the_built_in_defaults() {
    let repo_file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let built_in = run_cli(&["config", "show"], "", &[]);
    let from_file = run_cli(&["config", "show", "--config", repo_file], "", &[]);
    assert!(built_in.status.success() && from_file.status.success());
    assert_eq!(
        String::from_utf8_lossy(&from_file.stdout),
        String::from_utf8_lossy(&built_in.stdout),
        "config/default.toml drifted from the built-in defaults: regenerate it from `confab config show`"
    );
    // Every example configuration is valid.
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples")).unwrap() {
        let path = entry.unwrap().path();
        let out = run_cli(&["config", "check", "--config", path.to_str().unwrap()], "", &[]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
