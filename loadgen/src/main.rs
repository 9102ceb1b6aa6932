//! Load generator for Confab. Registers N user pairs, connects them as Socket.IO clients,
//! sends at a target rate (or flat out with a bounded in-flight window per sender), and
//! reports sent/acked/delivered/missing/duplicates, each receiver's stream positions (gaps,
//! arrivals behind the last position), throughput and latency percentiles.
//! With `--idle K` it instead holds K idle authenticated sockets for memory measurements.

mod server;
mod sio;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use stats::Samples;
use tokio::sync::Semaphore;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for Confab")]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Base URL of a second node of the same cluster: receivers connect there, senders to
    /// `--url`, so every message crosses nodes.
    #[arg(long)]
    url2: Option<String>,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Target messages per second over all pairs; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unacked messages allowed per sender.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Hold this many idle authenticated sockets instead of sending.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Idle mode: how many users hold the sockets (default one per 100 sockets, at most
    /// 100). A user's sockets share its rooms; one user per socket, as when every socket is
    /// a different person, gives each socket its own.
    #[arg(long)]
    idle_users: Option<usize>,
    /// Idle mode: seconds to hold the sockets.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// The server's pid (twice with `--url2`: both nodes): its RSS per idle socket, or
    /// its CPU per delivered message.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Check through REST afterwards that every acked message is stored.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    verify: bool,
}

struct User {
    id: String,
    token: String,
}

async fn register(http: &reqwest::Client, url: &str, name: &str) -> Result<User, String> {
    // The ratelimit plugin limits registrations per IP: wait as told and try again.
    for _ in 0..100 {
        match register_once(http, url, name).await {
            Err(Retry::After(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Err(Retry::Fail(e)) => return Err(e),
            Ok(u) => return Ok(u),
        }
    }
    Err(format!("register {name}: still rate limited"))
}

enum Retry {
    After(u64),
    Fail(String),
}

async fn register_once(http: &reqwest::Client, url: &str, name: &str) -> Result<User, Retry> {
    let r = http
        .post(format!("{url}/auth/register"))
        .json(&json!({"username": name, "password": "loadgen-password"}))
        .send()
        .await
        .map_err(|e| Retry::Fail(e.to_string()))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| Retry::Fail(e.to_string()))?;
    if status.as_u16() == 429 {
        return Err(Retry::After(v["retryAfterMs"].as_u64().unwrap_or(1000)));
    }
    if status.as_u16() != 201 {
        return Err(Retry::Fail(format!("register {name}: {status} {v}")));
    }
    Ok(User {
        id: v["user"]["id"].as_str().unwrap_or_default().to_owned(),
        token: v["token"].as_str().unwrap_or_default().to_owned(),
    })
}

async fn register_many(http: &reqwest::Client, url: &str, prefix: &str, n: usize) -> Vec<User> {
    // A few at a time: registration hashes a password, which is meant to be slow.
    let sem = Arc::new(Semaphore::new(8));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, url, sem) = (http.clone(), url.to_owned(), sem.clone());
            let name = format!("{prefix}{i}");
            tokio::spawn(async move {
                let _p = sem.acquire().await;
                register(&http, &url, &name).await
            })
        })
        .collect();
    let mut users = Vec::with_capacity(n);
    for t in tasks {
        users.push(t.await.expect("join").unwrap_or_else(|e| panic!("{e}")));
    }
    users
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 0xffffff
    );
    if args.idle > 0 {
        idle(&args, &http, &run).await;
    } else if !send(&args, &http, &run).await {
        // A bench run that lost, repeated or misordered anything is not a figure.
        std::process::exit(1);
    }
}

async fn idle(args: &Args, http: &reqwest::Client, run: &str) {
    let users = register_many(
        http,
        &args.url,
        &format!("idle{run}_"),
        args.idle_users.unwrap_or(args.idle.div_ceil(100).min(100)).max(1),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = args.server_pid.first().copied().and_then(rss_kib);
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.idle);
    for i in 0..args.idle {
        let u = &users[i % users.len()];
        match sio::connect(&args.url, &u.token).await {
            Ok(conn) => held.push(conn),
            Err(e) => {
                eprintln!("socket {i}: {e}");
                break;
            }
        }
    }
    println!(
        "connected {} idle sockets in {:.1} s",
        held.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let (Some(&pid), Some(b)) = (args.server_pid.first(), before) {
        let after = rss_kib(pid).unwrap_or(b);
        let per = (after.saturating_sub(b)) as f64 / held.len().max(1) as f64;
        println!("server RSS {b} KiB -> {after} KiB: {per:.2} KiB per idle socket");
    }
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
}

struct PairResult {
    acked: u64,
    sent: u64,
    errors: u64,
    ack_lat: Samples,
}

struct RecvResult {
    duplicates: u64,
    recv_lat: Samples,
    seen: Vec<bool>,
    /// The receiver's stream as its socket saw it (DESIGN §4 Streams).
    stream: StreamCheck,
    /// The socket closed before the run ended (the server cuts a socket it cannot feed).
    closed: bool,
}

/// Positions of one receiver's stream, in arrival order: each should be one past the last.
#[derive(Default)]
struct StreamCheck {
    last: u64,
    /// Arrivals that skipped positions, and how many positions they skipped.
    gaps: u64,
    skipped: u64,
    /// Arrivals at or below the last position (repeats or out of order).
    behind: u64,
    /// Events without a position.
    unpositioned: u64,
}

impl StreamCheck {
    fn see(&mut self, pos: Option<u64>) {
        match pos {
            None => self.unpositioned += 1,
            Some(p) if p == self.last + 1 => self.last = p,
            Some(p) if p > self.last => {
                self.gaps += 1;
                self.skipped += p - self.last - 1;
                self.last = p;
            }
            Some(_) => self.behind += 1,
        }
    }
}

/// Runs the senders and receivers and prints the report; true when the run was clean: no
/// failed send, nothing missing, repeated or out of order, no socket closed by the
/// server, and (with `--verify`) every acked message stored.
async fn send(args: &Args, http: &reqwest::Client, run: &str) -> bool {
    let n = args.pairs;
    println!("registering {} users", 2 * n);
    let users = register_many(http, &args.url, &format!("lg{run}_"), 2 * n).await;
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered_counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let acked_counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());

    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    // Senders start together once every pair is connected: a sender that began while later
    // pairs connected would be counted in the totals but not in the measured time.
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for p in 0..n {
        let receiver_url = args.url2.as_deref().unwrap_or(&args.url);
        let (rw, mut rrx) = sio::connect(receiver_url, &users[2 * p + 1].token)
            .await
            .expect("connect receiver");
        let delivered = delivered_counts.clone();
        let mut done = done_rx.clone();
        receivers.push(tokio::spawn(async move {
            let mut r = RecvResult {
                duplicates: 0,
                recv_lat: Samples::default(),
                seen: Vec::new(),
                stream: StreamCheck::default(),
                closed: false,
            };
            loop {
                let frame = tokio::select! {
                    f = rrx.recv() => f,
                    _ = done.changed() => None,
                };
                let text = match frame {
                    Some(sio::Frame::Event(text)) => text,
                    Some(sio::Frame::Closed) => {
                        r.closed = true;
                        break;
                    }
                    _ => break,
                };
                if !text.starts_with("[\"receive_message\"") {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                r.stream.see(v[1]["pos"].as_u64());
                let body = v[1]["message"].as_str().unwrap_or("");
                let Some((seq, sent_us)) = body.split_once(':') else {
                    continue;
                };
                let (Ok(seq), Ok(sent_us)) = (seq.parse::<usize>(), sent_us.parse::<u64>()) else {
                    continue;
                };
                if r.seen.len() <= seq {
                    r.seen.resize(seq + 1, false);
                }
                if r.seen[seq] {
                    r.duplicates += 1;
                    continue;
                }
                r.seen[seq] = true;
                delivered[p].fetch_add(1, Ordering::Relaxed);
                let now = base.elapsed().as_micros() as u64;
                r.recv_lat.record(Duration::from_micros(now.saturating_sub(sent_us)));
            }
            drop(rw);
            r
        }));
        let (sw, mut srx) = sio::connect(&args.url, &users[2 * p].token)
            .await
            .expect("connect sender");
        let receiver_id = users[2 * p + 1].id.clone();
        let (stop, acked, window) = (stop.clone(), acked_counts.clone(), args.window);
        let mut go = go_rx.clone();
        let per_pair_interval = (args.rate > 0).then(|| Duration::from_secs_f64(n as f64 / args.rate as f64));
        senders.push(tokio::spawn(async move {
            let sem = Arc::new(Semaphore::new(window));
            let pending: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
            let (p2, s2, acked2) = (pending.clone(), sem.clone(), acked.clone());
            let ack_task = tokio::spawn(async move {
                let mut res = PairResult { acked: 0, sent: 0, errors: 0, ack_lat: Samples::default() };
                while let Some(frame) = srx.recv().await {
                    match frame {
                        sio::Frame::Ack(id, body) => {
                            if let Some(t) = p2.lock().unwrap().remove(&id) {
                                res.ack_lat.record(t.elapsed());
                            }
                            if body.contains("\"ok\":true") {
                                res.acked += 1;
                                acked2[p].fetch_add(1, Ordering::Relaxed);
                            } else {
                                res.errors += 1;
                                if res.errors <= 3 {
                                    eprintln!("pair {p}: send failed: {body}");
                                }
                            }
                            s2.add_permits(1);
                        }
                        sio::Frame::Closed => break,
                        sio::Frame::Event(_) => {}
                    }
                }
                res
            });
            let _ = go.wait_for(|go| *go).await;
            let mut seq = 0u64;
            // Pairs start together: each at its own phase of the interval, so that the
            // rate is spread evenly instead of arriving in bursts of every pair at once.
            let mut ticker = per_pair_interval.map(|d| {
                let phase = d.mul_f64(p as f64 / n as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                let Ok(permit) = sem.clone().acquire_owned().await else { break };
                permit.forget();
                let sent_us = base.elapsed().as_micros() as u64;
                pending.lock().unwrap().insert(seq, Instant::now());
                let data = json!({"receiverId": receiver_id, "message": format!("{seq}:{sent_us}"), "clientMsgId": format!("{p}-{seq}")});
                if !sw.emit_with_ack(seq, "send_message", &data) {
                    break;
                }
                seq += 1;
            }
            // Wait for the outstanding acks, then close.
            let deadline = Instant::now() + Duration::from_secs(10);
            while sem.available_permits() < window && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sw.close();
            let mut res = ack_task.await.expect("ack task");
            res.sent = seq;
            res
        }));
    }
    println!(
        "{n} pairs connected; sending for {} s {}",
        args.duration,
        if args.rate > 0 {
            format!("at {} msg/s", args.rate)
        } else {
            "flat out".into()
        }
    );
    let cpu_before: Vec<Option<f64>> = args.server_pid.iter().map(|p| server::cpu_secs(*p)).collect();
    let hist_before = server::event_buckets(http, &args.url, "send_message").await;
    let started = Instant::now();
    let _ = go_tx.send(true);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut pairs = Vec::with_capacity(n);
    for s in senders {
        pairs.push(s.await.expect("sender"));
    }
    let send_secs = started.elapsed().as_secs_f64();
    // Deliveries may trail the acks a little: wait until every acked message arrived.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && (0..n).any(|p| delivered_counts[p].load(Ordering::Relaxed) < acked_counts[p].load(Ordering::Relaxed))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: Option<f64> = args
        .server_pid
        .iter()
        .zip(&cpu_before)
        .map(|(p, b)| Some(server::cpu_secs(*p)? - (*b)?))
        .sum();
    let hist_after = server::event_buckets(http, &args.url, "send_message").await;
    let _ = done_tx.send(true);
    let (mut sent, mut acked, mut errors, mut delivered, mut dups, mut missing) = (0, 0, 0, 0, 0, 0);
    let mut ack_lat = Samples::default();
    let mut recv_lat = Samples::default();
    let mut stored_ok = true;
    let mut streams = StreamTotals::default();
    for (p, (pair, rx)) in pairs.into_iter().zip(receivers).enumerate() {
        let d = delivered_counts[p].load(Ordering::Relaxed);
        sent += pair.sent;
        acked += pair.acked;
        errors += pair.errors;
        delivered += d;
        missing += pair.acked.saturating_sub(d);
        ack_lat.extend(pair.ack_lat);
        if let Ok(r) = rx.await {
            dups += r.duplicates;
            streams.add(&r);
            recv_lat.extend(r.recv_lat);
        }
        if args.verify {
            let stored = count_stored(http, &args.url, &users[2 * p], &users[2 * p + 1].id).await;
            if stored != pair.acked {
                stored_ok = false;
                eprintln!("pair {p}: {} acked but {stored} stored", pair.acked);
            }
        }
    }
    println!(
        "sent {sent}  acked {acked}  errors {errors}  delivered {delivered}  missing {missing}  duplicates {dups}"
    );
    println!(
        "delivered {:.0} msg/s (over {:.1} s of sending; {:.1} s until the last delivery)",
        delivered as f64 / send_secs,
        send_secs,
        elapsed
    );
    streams.print();
    if let Some(cpu) = cpu.filter(|_| !args.server_pid.is_empty()) {
        println!(
            "server CPU: {:.2} cores over {:.1} s, {:.1} us per delivered message",
            cpu / elapsed,
            elapsed,
            cpu * 1e6 / delivered.max(1) as f64
        );
    }
    if let (Some(b), Some(a)) = (&hist_before, &hist_after) {
        println!("server send_message (received to handled) {}", server::summary(b, a));
    }
    println!("send->ack     {}", ack_lat.summary());
    println!("send->receive {}", recv_lat.summary());
    if args.verify {
        println!(
            "durability: {}",
            if stored_ok {
                "every acked message is stored (checked through REST)"
            } else {
                "MISMATCH between acked and stored"
            }
        );
    }
    let clean = errors == 0 && missing == 0 && dups == 0 && stored_ok && streams.clean();
    if !clean {
        println!("result: NOT CLEAN (errors, missing, duplicates, gaps, closed sockets or unstored messages above)");
    }
    clean
}

/// The receivers' streams over the whole run.
#[derive(Default)]
struct StreamTotals {
    heads: Vec<u64>,
    gaps: u64,
    skipped: u64,
    behind: u64,
    unpositioned: u64,
    closed: u64,
}

impl StreamTotals {
    fn add(&mut self, r: &RecvResult) {
        self.heads.push(r.stream.last);
        self.gaps += r.stream.gaps;
        self.skipped += r.stream.skipped;
        self.behind += r.stream.behind;
        self.unpositioned += r.stream.unpositioned;
        self.closed += r.closed as u64;
    }

    fn clean(&self) -> bool {
        self.gaps == 0 && self.behind == 0 && self.unpositioned == 0 && self.closed == 0
    }

    fn print(&mut self) {
        self.heads.sort_unstable();
        let at = |q: f64| {
            self.heads
                .get(((self.heads.len().saturating_sub(1)) as f64 * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "streams: {} receivers, last position min {} / median {} / max {}; gaps {} ({} positions), \
             behind {}, without pos {}, sockets closed {}",
            self.heads.len(),
            at(0.0),
            at(0.5),
            at(1.0),
            self.gaps,
            self.skipped,
            self.behind,
            self.unpositioned,
            self.closed
        );
    }
}

/// Counts the messages stored between `user` and `partner` by paging backwards.
async fn count_stored(http: &reqwest::Client, url: &str, user: &User, partner: &str) -> u64 {
    let mut count = 0u64;
    let mut before: Option<String> = None;
    loop {
        let mut req = http
            .get(format!("{url}/chats/{}/with/{partner}", user.id))
            .bearer_auth(&user.token)
            .query(&[("limit", "200")]);
        if let Some(b) = &before {
            req = req.query(&[("before", b)]);
        }
        let Ok(r) = req.send().await else { return count };
        let page: Vec<Value> = r.json().await.unwrap_or_default();
        if page.is_empty() {
            return count;
        }
        count += page.len() as u64;
        before = page[0]["_id"].as_str().map(str::to_owned);
    }
}
