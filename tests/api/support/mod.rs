//! The test harness: starts the real `confab` binary on an ephemeral port with a temporary
//! data directory and a given TOML, waits for `/ready`, and stops it with SIGTERM.
//! Set `TEST_LOG=1` to see the server's logs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod proxy;
pub mod raw;
pub mod storage;

pub const BIN: &str = env!("CARGO_BIN_EXE_confab");

/// Variables the old backend honoured; a developer's shell must not leak them into tests.
const LEAKY_ENV: &[&str] = &["PORT", "MONGO_URI", "REDIS_URL", "JWT_SECRET", "NODE_ENV", "RUST_LOG"];

pub struct StartOptions<'a> {
    pub toml: &'a str,
    pub env: Vec<(&'a str, String)>,
    /// Reuse a data directory (restart tests); a fresh temporary one otherwise.
    pub data_dir: Option<PathBuf>,
}

impl<'a> StartOptions<'a> {
    pub fn new(toml: &'a str) -> Self {
        StartOptions {
            toml,
            env: Vec::new(),
            data_dir: None,
        }
    }
    pub fn env(mut self, key: &'a str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    child: Option<Child>,
    pub data_dir: PathBuf,
    _tmp: Option<TempDir>,
    logs: mpsc::Receiver<String>,
}

/// A command for the `confab` binary with a clean environment.
pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("CONFAB_") || LEAKY_ENV.contains(&k.as_str()) {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the CLI to completion (e.g. `config check`) in a temporary directory holding
/// `toml` as `confab.toml`.
pub fn run_cli(args: &[&str], toml: &str, env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("confab.toml"), toml).unwrap();
    let mut cmd = command(dir.path());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run confab")
}

impl Server {
    pub async fn start(toml: &str) -> Server {
        Self::start_with(StartOptions::new(toml)).await
    }

    /// Starts the server; panics with its output if it does not become ready.
    pub async fn start_with(opts: StartOptions<'_>) -> Server {
        match Self::try_start(opts).await {
            Ok(s) => s,
            Err(out) => panic!("server did not start:\n{out}"),
        }
    }

    /// Starts the server, or returns its output and exit status when it fails to boot.
    pub async fn try_start(opts: StartOptions<'_>) -> Result<Server, String> {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = TempDir::new().unwrap();
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        let config = data_dir.join("confab.toml");
        std::fs::write(&config, opts.toml).unwrap();
        let mut cmd = command(&data_dir);
        cmd.args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env("CONFAB_SERVER__HOST", "127.0.0.1")
            .env("CONFAB_SERVER__PORT", "0")
            .env("CONFAB_STORAGE__SQLITE__PATH", data_dir.join("confab.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uri) = storage::mongo_servers() {
            // Servers given the same SQLite file share one database, as nodes of one cluster.
            let sqlite = opts
                .env
                .iter()
                .find(|(k, _)| *k == "CONFAB_STORAGE__SQLITE__PATH")
                .map_or_else(|| data_dir.join("confab.db"), |(_, v)| data_dir.join(v));
            cmd.env("CONFAB_STORAGE__BACKEND", "mongodb")
                .env("CONFAB_STORAGE__MONGODB__URI", uri)
                .env("CONFAB_STORAGE__MONGODB__DATABASE", storage::database_for(&sqlite));
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn confab");
        let (tx, logs) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let echo = std::env::var_os("TEST_LOG").is_some();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[server] {line}");
                    }
                    if let Some(addr) = listening_addr(&line) {
                        let _ = addr_tx.send(addr);
                    }
                    let _ = tx.send(line);
                }
            });
        }
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[server!] {line}");
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(addr) = addr_rx.try_recv() {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                let out: Vec<String> = logs.try_iter().collect();
                return Err(format!("exit {status}\n{}", out.join("\n")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out: Vec<String> = logs.try_iter().collect();
                return Err(format!("no listening line within 30 s\n{}", out.join("\n")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
        let server = Server {
            addr,
            http,
            child: Some(child),
            data_dir,
            _tmp: tmp,
            logs,
        };
        server.wait_ready().await;
        Ok(server)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(self.url("/ready")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server at {} never became ready", self.addr);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The body of `GET path` as text, over the harness client.
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The base URL for Socket.IO clients.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Log lines printed so far (JSON when started by this harness).
    pub fn logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    /// The exit status if the server has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process without letting it clean up (SIGKILL).
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Prints a line where a reader of the test command sees it, pass or fail: the test
/// harness captures `println!`, not writes to the process's stderr.
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A unique name for users created by one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    t.wrapping_mul(2_654_435_761)
        .wrapping_add(N.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503))
}
