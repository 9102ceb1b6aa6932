//! In-process throughput of the auth plugin: logins per second with the default argon2id
//! parameters, and `GET /auth/me` requests per second with latency percentiles, through
//! the real salvo handlers (no network; in-memory stores).
//!
//! `cargo bench -p confab-auth` (release). Sizes: `BENCH_LOGINS` (default 100),
//! `BENCH_ME` (default 50000), `BENCH_CONCURRENCY` (default 16).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_auth::service::{AuthService, LoginRequest, RegisterRequest, Stores};
use confab_auth::{AuthConfig, routes};
use confab_sdk::async_trait;
use confab_sdk::clock::SystemClock;
use confab_sdk::cluster::{RevocationStore, SessionData, SessionStore};
use confab_sdk::salvo::test::TestClient;
use confab_sdk::salvo::{Router, Service};
use confab_sdk::storage::{NewUser, StorageError, StorageResult, UserRecord, UserStore};

#[derive(Default)]
struct Users(Mutex<HashMap<String, UserRecord>>);

#[async_trait]
impl UserStore for Users {
    async fn create_user(&self, u: NewUser) -> StorageResult<UserRecord> {
        let mut all = self.0.lock().unwrap();
        let key = u.username.to_lowercase();
        if all.contains_key(&key) {
            return Err(StorageError::Conflict("username taken".into()));
        }
        let rec = UserRecord {
            id: confab_sdk::ids::new_id(0),
            username: u.username,
            display_name: u.display_name,
            password_hash: u.password_hash,
            created_at: Default::default(),
            updated_at: Default::default(),
        };
        all.insert(key, rec.clone());
        Ok(rec)
    }
    async fn user_by_id(&self, id: &str) -> StorageResult<Option<UserRecord>> {
        Ok(self.0.lock().unwrap().values().find(|u| u.id == id).cloned())
    }
    async fn user_by_username(&self, name: &str) -> StorageResult<Option<UserRecord>> {
        Ok(self.0.lock().unwrap().get(&name.to_lowercase()).cloned())
    }
    async fn set_password_hash(&self, id: &str, hash: &str) -> StorageResult<()> {
        if let Some(u) = self.0.lock().unwrap().values_mut().find(|u| u.id == id) {
            u.password_hash = hash.to_owned();
        }
        Ok(())
    }
    async fn deployment_secret(&self) -> StorageResult<String> {
        Ok("ab".repeat(32))
    }
}

#[derive(Default)]
struct Sessions(Mutex<HashMap<String, SessionData>>);

#[async_trait]
impl SessionStore for Sessions {
    async fn create(&self, data: SessionData, _: u64, _: u64) -> StorageResult<String> {
        let id = confab_sdk::ids::random_token();
        self.0.lock().unwrap().insert(id.clone(), data);
        Ok(id)
    }
    async fn get(&self, id: &str) -> StorageResult<Option<SessionData>> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }
    async fn delete(&self, id: &str) -> StorageResult<()> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
}

/// Logins issue a refresh family; the bench never refreshes.
struct Refresh;

#[async_trait]
impl confab_sdk::cluster::RefreshStore for Refresh {
    async fn issue(
        &self,
        user_id: &str,
        username: &str,
        _: u64,
    ) -> StorageResult<(String, confab_sdk::cluster::RefreshGrant)> {
        let family = confab_sdk::ids::random_token();
        let grant = confab_sdk::cluster::RefreshGrant {
            family: family.clone(),
            user_id: user_id.into(),
            username: username.into(),
        };
        Ok((confab_sdk::cluster::new_refresh_token(&family), grant))
    }
    async fn rotate(&self, _: &str, _: u64) -> StorageResult<confab_sdk::cluster::Rotation> {
        Ok(confab_sdk::cluster::Rotation::Invalid)
    }
    async fn revoke_family(&self, _: &str) -> StorageResult<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Revocations(Mutex<HashMap<String, i64>>);

#[async_trait]
impl RevocationStore for Revocations {
    async fn revoke(&self, jti: &str, until: i64) -> StorageResult<()> {
        self.0.lock().unwrap().insert(jti.to_owned(), until);
        Ok(())
    }
    async fn is_revoked(&self, jti: &str) -> StorageResult<bool> {
        Ok(self.0.lock().unwrap().contains_key(jti))
    }
}

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
        users: Arc::new(Users::default()),
        sessions: Arc::new(Sessions::default()),
        revocations: Arc::new(Revocations::default()),
        refresh: Arc::new(Refresh),
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
