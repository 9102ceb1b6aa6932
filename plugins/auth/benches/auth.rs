//! In-process throughput of the auth plugin: logins per second with the default argon2id
//! parameters, and `GET /auth/me` requests per second with latency percentiles, through
//! the real salvo handlers (no network; in-memory stores).
//!
//! `cargo bench -p confab-auth` (release). Sizes: `BENCH_LOGINS` (default 100),
//! `BENCH_ME` (default 50000), `BENCH_CONCURRENCY` (default 16).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_auth::service::{AuthService, LoginRequest, RegisterRequest, Stores};
use confab_auth::{AuthConfig, routes};
use confab_contract::fakes::{MemRefresh, MemRevocations, MemSessions, MemUsers};
use confab_sdk::clock::SystemClock;
use confab_sdk::salvo::test::TestClient;
use confab_sdk::salvo::{Router, Service};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `total` calls of `op` over `concurrency` tasks; returns (elapsed, sorted latencies).
async fn drive<F, Fut>(total: usize, concurrency: usize, op: F) -> (Duration, Vec<Duration>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            let n = total / concurrency + usize::from(t < total % concurrency);
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t0 = Instant::now();
                    op().await;
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    (elapsed, all)
}

fn report(name: &str, elapsed: Duration, lat: &[Duration]) {
    println!(
        "{name}: {} ops in {:.2} s = {:.1} ops/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(lat, 0.50).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let logins = env_usize("BENCH_LOGINS", 100).max(1);
    let me_requests = env_usize("BENCH_ME", 50_000).max(1);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16).max(1);
    let mut config = AuthConfig::default();
    config.jwt.secret = "benchmark-secret-0123456789abcdef-0123456789".into();
    let stores = Stores {
        users: Arc::new(MemUsers::default()),
        sessions: Arc::new(MemSessions::default()),
        revocations: Arc::new(MemRevocations::default()),
        refresh: Arc::new(MemRefresh),
        clock: Arc::new(SystemClock),
    };
    let svc = Arc::new(AuthService::new(&config, stores, false, Some("bench-secret")).unwrap());
    let a = &config.password.argon2;
    println!(
        "argon2id m={} KiB t={} p={}; hash concurrency {}; {concurrency} client tasks",
        a.memory_kib,
        a.iterations,
        a.parallelism,
        confab_auth::password::concurrency(config.password.hash_concurrency)
    );

    let password = "correct horse battery".to_owned();
    let registered = svc
        .register(RegisterRequest {
            username: "bench".into(),
            password: password.clone(),
            display_name: None,
        })
        .await
        .unwrap();

    let login_svc = svc.clone();
    let (elapsed, lat) = drive(logins, concurrency, move || {
        let svc = login_svc.clone();
        let password = password.clone();
        async move {
            svc.login(LoginRequest {
                username: "bench".into(),
                password,
            })
            .await
            .unwrap();
        }
    })
    .await;
    report("POST login (service)", elapsed, &lat);

    let app = Arc::new(Service::new(Router::new().push(routes::router(svc))));
    let token = Arc::new(registered.body.token);
    let (elapsed, lat) = drive(me_requests, concurrency, move || {
        let (app, token) = (app.clone(), token.clone());
        async move {
            let res = TestClient::get("http://127.0.0.1/auth/me")
                .bearer_auth(token.as_str())
                .send(&*app)
                .await;
            assert_eq!(res.status_code.map(|s| s.as_u16()), Some(200));
        }
    })
    .await;
    report("GET /auth/me (handler)", elapsed, &lat);
}
