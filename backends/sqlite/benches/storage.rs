//! SQLite storage benchmark: durable insert throughput through group commit, then read
//! latency (history pages, conversation lists, sync) over a million stored messages.
//!
//! `cargo bench --bench storage`. Scale with environment variables:
//! `CONFAB_BENCH_MESSAGES` (inserts timed in phase 1, default 200000),
//! `CONFAB_BENCH_WRITERS` (concurrent writer tasks, 64), `CONFAB_BENCH_STORED` (messages
//! stored for the read phase, 1000000), `CONFAB_BENCH_USERS` (1000),
//! `CONFAB_BENCH_QUERIES` (reads timed per kind, 5000), `CONFAB_BENCH_CLIENT_IDS` (1: phase 1
//! sends a clientMsgId with every message, as retrying clients do), `CONFAB_BENCH_SYNCHRONOUS`
//! (`full` or `normal`, default the store's default), `CONFAB_BENCH_DIR` (where the
//! temporary database goes, default the system temp dir: it must be a real disk for
//! the fsync cost to show).

// The server's allocator, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_sdk::clock::SystemClock;
use confab_sdk::futures_util::future::join_all;
use confab_sdk::storage::CommitObserver;
use confab_sdk::storage::{MessageStore, NewMessage, NewUser, PageQuery, UserStore};
use confab_sqlite::{SqliteConfig, SqliteStore};
use rand::Rng;
use rand::seq::IndexedRandom;

/// Partner offsets: user `u` talks with `u ± d` for each `d`, so every user has about
/// twenty conversations and every pair holds a similar share of the messages.
const OFFSETS: &[usize] = &[1, 7, 31, 97, 211, 307, 401, 449, 479, 491];

fn env(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

struct Setup {
    messages: usize,
    writers: usize,
    stored: usize,
    users: usize,
    queries: usize,
    client_ids: bool,
}

#[derive(Default)]
struct Batches {
    sizes: Vec<usize>,
    latencies: Vec<Duration>,
}

fn percentile<T: Copy + Ord>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    println!(
        "  {label:<32} n={:<6} p50={}  p99={}  max={}  mean={}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples")),
        ms(mean)
    );
}

/// The pair `(lo user index, hi user index)` of pair number `i`.
fn pair_of(i: usize, users: usize) -> (usize, usize) {
    let (u, d) = (i / OFFSETS.len(), OFFSETS[i % OFFSETS.len()]);
    (u, (u + d) % users)
}

fn new_message(ids: &[String], pair: (usize, usize), flip: bool, n: usize) -> NewMessage {
    let (from, to) = if flip { (pair.1, pair.0) } else { pair };
    NewMessage {
        sender_id: ids[from].clone(),
        receiver_id: ids[to].clone(),
        message: format!("benchmark message number {n}, long enough to look like chat text"),
        client_msg_id: None,
    }
}

fn client_msg_id(on: bool) -> Option<String> {
    on.then(|| format!("{:032x}", rand::random::<u128>()))
}

#[tokio::main]
async fn main() {
    let setup = Setup {
        messages: env("CONFAB_BENCH_MESSAGES", 200_000),
        writers: env("CONFAB_BENCH_WRITERS", 64).max(1),
        stored: env("CONFAB_BENCH_STORED", 1_000_000),
        users: env("CONFAB_BENCH_USERS", 1000).max(2 * OFFSETS[OFFSETS.len() - 1] + 2),
        queries: env("CONFAB_BENCH_QUERIES", 5000).max(1),
        client_ids: env("CONFAB_BENCH_CLIENT_IDS", 0) != 0,
    };
    let base = std::env::var("CONFAB_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::Builder::new()
        .prefix("confab-bench-")
        .tempdir_in(&base)
        .expect("temp dir");
    let mut cfg = SqliteConfig {
        path: dir.path().join("bench.db").to_string_lossy().into_owned(),
        ..SqliteConfig::default()
    };
    if let Ok(sync) = std::env::var("CONFAB_BENCH_SYNCHRONOUS") {
        cfg.synchronous = sync;
    }
    let batches = Arc::new(Mutex::new(Batches::default()));
    let seen = batches.clone();
    let observer: CommitObserver = Arc::new(move |size, latency| {
        let mut b = seen.lock().expect("lock");
        b.sizes.push(size);
        b.latencies.push(latency);
    });
    let store = SqliteStore::open(&cfg, Arc::new(SystemClock), Some(observer))
        .await
        .expect("open store");
    println!(
        "confab storage bench: sqlite {} at {} (synchronous={}, max_batch={}, readers={})",
        rusqlite::version(),
        cfg.path,
        cfg.synchronous,
        cfg.max_batch,
        cfg.readers
    );

    let users = create_users(&store, setup.users).await;
    let pairs = setup.users * OFFSETS.len();
    batches.lock().expect("lock").sizes.clear();
    batches.lock().expect("lock").latencies.clear();

    // Phase 1: durable inserts from concurrent writers, each awaiting its ack before the
    // next send, as a socket handler does.
    println!(
        "\n[1] durable inserts: {} messages from {} writer tasks, each awaiting every ack{}",
        setup.messages,
        setup.writers,
        if setup.client_ids { ", with clientMsgIds" } else { "" }
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..setup.writers)
        .map(|w| {
            let (store, users) = (store.clone(), users.clone());
            let count = setup.messages / setup.writers + usize::from(w < setup.messages % setup.writers);
            let client_ids = setup.client_ids;
            tokio::spawn(async move {
                let mut acks = Vec::with_capacity(count);
                for n in 0..count {
                    let (pair, flip) = {
                        let mut rng = rand::rng();
                        (rng.random_range(0..pairs), rng.random_bool(0.5))
                    };
                    let mut m = new_message(&users, pair_of(pair, users.len()), flip, n);
                    m.client_msg_id = client_msg_id(client_ids);
                    let sent = Instant::now();
                    store.insert(m).await.expect("insert");
                    acks.push(sent.elapsed());
                }
                acks
            })
        })
        .collect();
    let mut acks = Vec::with_capacity(setup.messages);
    for t in join_all(tasks).await {
        acks.extend(t.expect("writer task"));
    }
    let elapsed = started.elapsed();
    println!(
        "  throughput                       {:.0} inserts/s ({} in {:.2} s)",
        setup.messages as f64 / elapsed.as_secs_f64(),
        setup.messages,
        elapsed.as_secs_f64()
    );
    {
        let mut b = batches.lock().expect("lock");
        let mut sizes = std::mem::take(&mut b.sizes);
        let latencies = std::mem::take(&mut b.latencies);
        sizes.sort_unstable();
        let total: usize = sizes.iter().sum();
        println!(
            "  batches                          {} commits, mean {:.1}, p50 {}, p99 {}, max {}",
            sizes.len(),
            total as f64 / sizes.len().max(1) as f64,
            percentile(&sizes, 0.5),
            percentile(&sizes, 0.99),
            sizes.last().copied().unwrap_or(0)
        );
        report("commit latency (BEGIN..COMMIT)", latencies);
    }
    report("insert ack latency", acks);

    // Phase 2: fill up to the read-phase size quickly (many inserts in flight), then
    // time reads.
    let missing = setup.stored.saturating_sub(setup.messages);
    println!(
        "\n[2] reads over {} stored messages ({} users, {} pairs)",
        setup.stored.max(setup.messages),
        setup.users,
        pairs
    );
    let started = Instant::now();
    bulk_load(&store, &users, missing, setup.messages).await;
    if missing > 0 {
        let elapsed = started.elapsed();
        println!(
            "  bulk load                        {} messages in {:.2} s ({:.0}/s, pipelined)",
            missing,
            elapsed.as_secs_f64(),
            missing as f64 / elapsed.as_secs_f64()
        );
    }
    batches.lock().expect("lock").sizes.clear();
    batches.lock().expect("lock").latencies.clear();

    // Cursors: a sample of real message ids of each pair, taken from full history.
    let cursors = sample_cursors(&store, &users, pairs).await;
    let mut rng = rand::rng();
    let page = 50;

    // Warm the page cache and the statement caches before timing.
    for _ in 0..500 {
        let (lo, hi) = pair_of(rng.random_range(0..pairs), users.len());
        store
            .history(
                &users[lo],
                &users[hi],
                PageQuery {
                    limit: page,
                    ..PageQuery::default()
                },
            )
            .await
            .expect("history");
    }

    let mut kinds: [(&str, Vec<Duration>); 3] = [
        ("history, newest page", Vec::new()),
        ("history, before=random", Vec::new()),
        ("history, after=random", Vec::new()),
    ];
    let mut all_history = Vec::new();
    for q in 0..setup.queries * 3 {
        let p = rng.random_range(0..pairs);
        let (lo, hi) = pair_of(p, users.len());
        let cursor = cursors[p].choose(&mut rng).cloned();
        let kind = q % 3;
        let query = match kind {
            0 => PageQuery {
                limit: page,
                ..PageQuery::default()
            },
            1 => PageQuery {
                before: cursor,
                limit: page,
                ..PageQuery::default()
            },
            _ => PageQuery {
                after: cursor,
                limit: page,
                ..PageQuery::default()
            },
        };
        let t = Instant::now();
        let got = store.history(&users[lo], &users[hi], query).await.expect("history");
        let took = t.elapsed();
        assert!(got.len() <= page);
        kinds[kind].1.push(took);
        all_history.push(took);
    }
    report("history page of 50 (all kinds)", all_history);
    for (label, samples) in kinds {
        report(label, samples);
    }

    let mut lists = Vec::with_capacity(setup.queries);
    let mut sizes = 0;
    for _ in 0..setup.queries {
        let u = &users[rng.random_range(0..users.len())];
        let t = Instant::now();
        let list = store.conversations(u, None, 200).await.expect("conversations");
        lists.push(t.elapsed());
        sizes += list.len();
    }
    report(&format!("conversation list (~{} each)", sizes / setup.queries), lists);

    let mut syncs = Vec::with_capacity(setup.queries);
    for _ in 0..setup.queries {
        let p = rng.random_range(0..pairs);
        let (lo, _) = pair_of(p, users.len());
        let after = cursors[p].choose(&mut rng).cloned();
        let t = Instant::now();
        store.since(&users[lo], after.as_deref(), 100).await.expect("since");
        syncs.push(t.elapsed());
    }
    report("sync (since, limit 100)", syncs);

    // sync {afterPos}: a page of a user's stream from a random position, with its head.
    let mut streams = Vec::with_capacity(setup.queries);
    let mut heads = Vec::with_capacity(setup.queries);
    for _ in 0..setup.queries {
        let u = &users[rng.random_range(0..users.len())];
        let head = store.stream(u, 0, 0).await.expect("head").head_pos;
        let t = Instant::now();
        store.stream(u, rng.random_range(0..=head), 100).await.expect("stream");
        streams.push(t.elapsed());
        let t = Instant::now();
        store.stream(u, 0, 0).await.expect("head");
        heads.push(t.elapsed());
    }
    report("stream page (afterPos, limit 100)", streams);
    report("stream head (limit 0)", heads);

    let mut reads = Vec::with_capacity(setup.queries);
    for _ in 0..setup.queries {
        let p = rng.random_range(0..pairs);
        let (lo, hi) = pair_of(p, users.len());
        let t = Instant::now();
        store.mark_read(&users[lo], &users[hi], None).await.expect("mark_read");
        reads.push(t.elapsed());
    }
    report("mark_read (a durable write)", reads);

    store.close().await;
    let size = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(0);
    println!("\ndatabase file: {:.1} MiB", size as f64 / (1024.0 * 1024.0));
}

async fn create_users(store: &Arc<SqliteStore>, n: usize) -> Arc<Vec<String>> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let user = NewUser {
                    username: format!("user{i}"),
                    display_name: None,
                    password_hash: "x".into(),
                };
                store.create_user(user).await.expect("create_user").id
            }
        })
        .collect();
    Arc::new(join_all(calls).await)
}

/// Loads `n` messages through the store with many inserts in flight, so batches fill up.
async fn bulk_load(store: &Arc<SqliteStore>, users: &Arc<Vec<String>>, n: usize, offset: usize) {
    const IN_FLIGHT: usize = 4096;
    let pairs = users.len() * OFFSETS.len();
    let mut done = 0;
    while done < n {
        let chunk = IN_FLIGHT.min(n - done);
        let calls: Vec<_> = {
            let mut rng = rand::rng();
            (0..chunk)
                .map(|i| {
                    let pair = pair_of(rng.random_range(0..pairs), users.len());
                    store.insert(new_message(users, pair, rng.random_bool(0.5), offset + done + i))
                })
                .collect()
        };
        for r in join_all(calls).await {
            r.expect("bulk insert");
        }
        done += chunk;
    }
}

async fn sample_cursors(store: &Arc<SqliteStore>, users: &Arc<Vec<String>>, pairs: usize) -> Vec<Vec<String>> {
    let mut cursors = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let (lo, hi) = pair_of(p, users.len());
        let all = store
            .history(
                &users[lo],
                &users[hi],
                PageQuery {
                    limit: usize::MAX,
                    ..PageQuery::default()
                },
            )
            .await
            .expect("history");
        cursors.push(all.into_iter().step_by(7).map(|m| m.id).collect::<Vec<_>>());
    }
    cursors
}
