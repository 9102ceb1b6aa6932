//! Rate-limit counters in Redis, shared by every node (`confab_contract::cluster::
//! ratelimit_store`). The arithmetic is `confab_sdk::ratelimit::gcra` and the quota count,
//! run for all of one request's rules in one Lua script, on Redis's clock, so nodes agree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use confab_sdk::async_trait;
use confab_sdk::ratelimit::{Check, Decision, Limit, RateLimitStore, quota_decision};
use confab_sdk::storage::{StorageError, StorageResult};
use redis::{ErrorKind, Script, ServerErrorKind};
use tokio::sync::{Notify, oneshot};

use crate::RedisCluster;

/// Keeps quota keys this long past their window, so a late request of the old window
/// still finds its count.
const QUOTA_SLACK_MS: u64 = 60_000;

/// The checks of one or more requests (several only on a single Redis, where any keys may
/// share a script). KEYS every request's counters, request after request; ARGV the number
/// of requests, then each request's number of checks, then three per check: `r`,
/// emission interval (µs), burst for a GCRA rate, or `q`, limit, expiry (ms) for a quota.
/// Each request's checks run in order and stop after its first refusal. Returns, per
/// request, the number of checks made, then four numbers per check made: allowed, then
/// remaining, retry after µs, reset after µs (a rate) or the count (a quota). Times are
/// Redis's (`TIME`): nodes need not agree.
const CHECKS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local function put(a, b, c, d)
  out[#out + 1] = a; out[#out + 1] = b; out[#out + 1] = c; out[#out + 1] = d
end
local requests = tonumber(ARGV[1])
local k, a = 0, 1 + requests
for r = 1, requests do
  local n = tonumber(ARGV[1 + r])
  local at = #out + 1
  out[at] = 0
  for i = 1, n do
    local key, kind = KEYS[k + i], ARGV[a + 3 * i - 2]
    local x, y = tonumber(ARGV[a + 3 * i - 1]), tonumber(ARGV[a + 3 * i])
    out[at] = i
    if kind == 'r' then
      local window = x * y
      local tat = tonumber(redis.call('GET', key)) or now
      if tat < now then tat = now end
      local new = tat + x
      if new - now > window then
        put(0, 0, new - now - window, tat - now)
        break
      end
      redis.call('SET', key, string.format('%.0f', new), 'PX', math.max(1, math.ceil((new - now) / 1000)))
      put(1, math.floor((window - (new - now)) / x), 0, new - now)
    else
      local c = tonumber(redis.call('GET', key) or '0')
      if c >= x then
        put(0, c, 0, 0)
        break
      end
      c = redis.call('INCR', key)
      if c == 1 then redis.call('PEXPIRE', key, y) end
      put(1, c, 0, 0)
    end
  end
  k, a = k + n, a + 3 * n
end
return out
";

/// Requests one batched script call takes at most (Redis runs nothing else meanwhile).
const MAX_BATCH: usize = 256;

/// One request's counters and arguments, as `CHECKS` takes them.
struct Request {
    keys: Vec<String>,
    /// Per check: `r` or `q`, then its two numbers.
    args: Vec<(&'static str, u64, u64)>,
}

/// A request waiting for the batch call, and where its answer goes.
struct Waiting {
    request: Request,
    reply: oneshot::Sender<StorageResult<Vec<u64>>>,
}

/// What the store and its batching task share.
struct Shared {
    cluster: Arc<RedisCluster>,
    script: Script,
    queue: Mutex<Vec<Waiting>>,
    wake: Notify,
    /// Every request is its own call: on a Redis Cluster from the start, and once Redis
    /// refused a batch for keys in different slots (a Redis in cluster mode behind a
    /// single `url`).
    alone: AtomicBool,
    /// The store is gone: the batching task stops.
    closed: AtomicBool,
}

/// Counters in Redis, shared by every node: `<prefix>{c:<who>}:rl:<rule>` holds a bucket's
/// TAT (µs, Redis time) and expires when the bucket is full again;
/// `<prefix>{c:<who>}:quota:<window>:<rule>` a count that expires after its window. The
/// hash tag keeps one client's counters in one Redis Cluster slot, so that one script
/// checks all of a request's rules; its `c:` keeps the tag from being empty (an empty
/// `who`, or one starting with `}`, would hash each key whole). Every key of a call shares
/// the text up to the tag's end, so braces in `who` still give them one tag.
///
/// On a single Redis, the checks of many requests go in one script call: what queued
/// while the last call was in flight goes out together (as the stream relay publishes),
/// so a busy node makes one call for many sends and a quiet one still one per send. A
/// Redis Cluster keeps one call per request (its keys are in the client's slot).
pub struct RedisRateLimitStore {
    shared: Arc<Shared>,
}

impl Drop for RedisRateLimitStore {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl RedisRateLimitStore {
    pub fn new(cluster: Arc<RedisCluster>) -> Self {
        let is_cluster = cluster.conn().is_cluster();
        let shared = Arc::new(Shared {
            cluster,
            script: Script::new(CHECKS),
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            alone: AtomicBool::new(is_cluster),
            closed: AtomicBool::new(false),
        });
        if !is_cluster {
            tokio::spawn(run_batches(shared.clone()));
        }
        RedisRateLimitStore { shared }
    }

    fn request(&self, who: &str, checks: &[Check<'_>]) -> Request {
        let mut request = Request {
            keys: Vec::with_capacity(checks.len()),
            args: Vec::with_capacity(checks.len()),
        };
        for check in checks {
            match check.limit {
                Limit::Rate(rate) => {
                    request
                        .keys
                        .push(self.shared.cluster.key(&format!("{{c:{who}}}:rl:{}", check.rule)));
                    request.args.push(("r", rate.emission_us, u64::from(rate.burst)));
                }
                Limit::Quota {
                    window,
                    limit,
                    reset_after_ms,
                } => {
                    request.keys.push(
                        self.shared
                            .cluster
                            .key(&format!("{{c:{who}}}:quota:{window}:{}", check.rule)),
                    );
                    request
                        .args
                        .push(("q", limit, reset_after_ms.saturating_add(QUOTA_SLACK_MS)));
                }
            }
        }
        request
    }
}

/// Takes what queued and makes one script call of it, round after round, until the store
/// is gone.
async fn run_batches(shared: Arc<Shared>) {
    while !shared.closed.load(Ordering::Acquire) {
        let taken = {
            let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = queue.len().min(MAX_BATCH);
            // A caller that gave up waiting is not counted.
            queue.drain(..n).filter(|w| !w.reply.is_closed()).collect::<Vec<_>>()
        };
        if taken.is_empty() {
            // What queued since the take is not missed: `notify_one` keeps a permit for
            // the next wait.
            shared.wake.notified().await;
            continue;
        }
        shared.call(taken).await;
    }
}

impl Shared {
    /// One `CHECKS` call for `request` alone.
    async fn call_alone(&self, request: &Request) -> StorageResult<Vec<u64>> {
        let mut call = self.script.prepare_invoke();
        call.arg(1).arg(request.keys.len());
        for (key, (kind, x, y)) in request.keys.iter().zip(&request.args) {
            call.key(key).arg(*kind).arg(*x).arg(*y);
        }
        let mut conn = self.cluster.conn();
        let mut out: Vec<u64> = self.cluster.run(call.invoke_async(&mut conn)).await?;
        // The first number is how many checks were made.
        out.drain(..1.min(out.len()));
        Ok(out)
    }

    async fn answer_alone(&self, taken: Vec<Waiting>) {
        for w in taken {
            let _ = w.reply.send(self.call_alone(&w.request).await);
        }
    }

    /// Queues `request` for the next batch and waits for its answer, for no longer than
    /// one command may take (a slow Redis must not hold sends up for a queue's worth of
    /// batches: the limiter admits what it cannot check).
    async fn check(&self, request: Request) -> StorageResult<Vec<u64>> {
        let (reply, answer) = oneshot::channel();
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(Waiting { request, reply });
            queue.len() == 1
        };
        if was_empty {
            self.wake.notify_one();
        }
        match tokio::time::timeout(self.cluster.timeout, answer).await {
            Ok(Ok(out)) => out,
            Ok(Err(_)) => Err(StorageError::Closed),
            Err(_) => Err(StorageError::Busy),
        }
    }

    async fn call(&self, taken: Vec<Waiting>) {
        if self.alone.load(Ordering::Relaxed) {
            return self.answer_alone(taken).await;
        }
        let mut call = self.script.prepare_invoke();
        call.arg(taken.len());
        for w in &taken {
            call.arg(w.request.keys.len());
        }
        for w in &taken {
            for (key, (kind, x, y)) in w.request.keys.iter().zip(&w.request.args) {
                call.key(key).arg(*kind).arg(*x).arg(*y);
            }
        }
        let mut conn = self.cluster.conn();
        let mut cross_slot = false;
        let answer: StorageResult<Vec<u64>> = self
            .cluster
            .run(async {
                let out = call.invoke_async(&mut conn).await;
                cross_slot = out
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot));
                out
            })
            .await;
        let mut out = match answer {
            Ok(out) => out.into_iter(),
            Err(e) if cross_slot => {
                tracing::warn!(error = %e, "redis refused a batch of rate-limit checks across slots: checking each request alone from now on");
                self.alone.store(true, Ordering::Relaxed);
                return self.answer_alone(taken).await;
            }
            Err(e) => {
                for w in taken {
                    let _ = w.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        for w in taken {
            let made = out.next().unwrap_or(0) as usize;
            let values: Vec<u64> = out.by_ref().take(made.saturating_mul(4)).collect();
            let _ = w.reply.send(Ok(values));
        }
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimitStore {
    async fn check(&self, who: &str, checks: &[Check<'_>]) -> StorageResult<Vec<Decision>> {
        let request = self.request(who, checks);
        let shared = &self.shared;
        let out = if shared.alone.load(Ordering::Relaxed) {
            shared.call_alone(&request).await?
        } else {
            shared.check(request).await?
        };
        let decisions = out.chunks_exact(4).zip(checks).map(|(v, check)| match check.limit {
            Limit::Rate(rate) => Decision {
                allowed: v[0] == 1,
                limit: u64::from(rate.burst),
                remaining: v[1],
                retry_after_ms: v[2].div_ceil(1000),
                reset_after_ms: v[3].div_ceil(1000),
            },
            Limit::Quota {
                limit, reset_after_ms, ..
            } => quota_decision(v[0] == 1, v[1], limit, reset_after_ms),
        });
        Ok(decisions.collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use std::io::Write;

    use confab_contract::cluster as contract;
    use confab_sdk::futures_util::FutureExt;

    use super::*;
    use crate::testing;

    #[tokio::test]
    async fn redis_store_passes_the_contract_on_two_nodes() {
        for config in testing::configs(30) {
            let (a, b) = (testing::cluster(&config).await, testing::cluster(&config).await);
            let (on_a, on_b) = (RedisRateLimitStore::new(a.clone()), RedisRateLimitStore::new(b));
            let sleeper: contract::Advance = Arc::new(|ms| tokio::time::sleep(Duration::from_millis(ms)).boxed());
            contract::ratelimit_store(&on_a, Some(&on_b), sleeper).await;
            testing::delete_prefix(&a).await;
        }
    }

    /// Many requests at once, of several clients, with one, two and three rules each:
    /// batched into one script call on a single Redis, each request is counted on its
    /// own and stops at its own first refusal.
    #[tokio::test]
    async fn concurrent_requests_of_many_clients_are_counted_each_on_its_own() {
        use confab_sdk::futures_util::future::join_all;
        use confab_sdk::ratelimit::Rate;
        for config in testing::configs(30) {
            let cluster = testing::cluster(&config).await;
            let store = RedisRateLimitStore::new(cluster.clone());
            let rate = Check {
                rule: "per_min",
                limit: Limit::Rate(Rate {
                    emission_us: 60_000_000,
                    burst: 5,
                }),
            };
            let quota = |rule, limit| Check {
                rule,
                limit: Limit::Quota {
                    window: 1,
                    limit,
                    reset_after_ms: 60_000,
                },
            };
            // Per shape: its checks, and how many of ten requests pass them all.
            let shapes: [(&str, Vec<Check>, usize); 3] = [
                ("two", vec![quota("per_day", 3), rate], 3),
                ("one", vec![rate], 5),
                // The rate admits five, the first quota three, the second two.
                ("three", vec![rate, quota("per_day", 3), quota("per_hour", 2)], 2),
            ];
            let calls = (0..60).map(|i| {
                let (shape, checks, _) = &shapes[i % 3];
                let who = format!("{shape}-{}", (i / 3) % 2);
                let store = &store;
                async move { (i % 3, who.clone(), store.check(&who, checks).await.expect("check")) }
            });
            let mut admitted = std::collections::HashMap::<String, usize>::new();
            for (shape, who, decisions) in join_all(calls).await {
                let checks = &shapes[shape].1;
                assert!(
                    !decisions.is_empty() && decisions.len() <= checks.len(),
                    "{who}: {decisions:?}"
                );
                let (last, before) = decisions.split_last().unwrap();
                assert!(
                    before.iter().all(|d| d.allowed),
                    "{who}: it stops at the refusal: {decisions:?}"
                );
                if last.allowed {
                    assert_eq!(decisions.len(), checks.len(), "{who}: {decisions:?}");
                    *admitted.entry(who).or_default() += 1;
                } else if decisions.len() == 1 && shape != 0 {
                    assert!(last.retry_after_ms > 0, "{who}: a refused rate says when: {last:?}");
                }
            }
            for (shape, _, want) in &shapes {
                for n in 0..2 {
                    let who = format!("{shape}-{n}");
                    assert_eq!(admitted.get(&who), Some(want), "{who}: {admitted:?}");
                }
            }
            // A refusal by the first rule leaves the later ones uncounted: the rate of
            // "two-0" took three requests, so two are left.
            let after = store.check("two-0", &[rate]).await.unwrap();
            assert_eq!((after[0].allowed, after[0].remaining), (true, 1), "{after:?}");
            testing::delete_prefix(&cluster).await;
        }
    }

    /// A Redis in cluster mode reached through `url` refuses a batch whose keys are in
    /// several slots (CROSSSLOT): the store then checks each request alone, and the
    /// requests of that batch still get their answers.
    #[tokio::test]
    async fn a_cluster_node_behind_a_single_url_gets_requests_one_by_one() {
        let Ok(urls) = std::env::var(testing::CLUSTER_VAR) else {
            let _ = writeln!(std::io::stderr(), "skipped: set {}", testing::CLUSTER_VAR);
            return;
        };
        let config = crate::RedisConfig {
            url: urls.split(',').next().unwrap().to_owned(),
            ..testing::configs(30).remove(0)
        };
        let cluster = testing::cluster(&config).await;
        let store = RedisRateLimitStore::new(cluster.clone());
        let rate = Check {
            rule: "per_min",
            limit: Limit::Rate(confab_sdk::ratelimit::Rate {
                emission_us: 60_000_000,
                burst: 5,
            }),
        };
        // Two clients whose counters this node serves (others answer MOVED), in two slots.
        let mut conn = cluster.conn();
        let mut served = Vec::new();
        for i in 0..200 {
            let who = format!("client-{i}");
            let key = cluster.key(&format!("{{c:{who}}}:rl:per_min"));
            let here: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await;
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if here.is_ok() && served.iter().all(|(_, s)| *s != slot) {
                served.push((who, slot));
            }
            if served.len() == 2 {
                break;
            }
        }
        assert_eq!(served.len(), 2, "this node serves some slots");
        let checks = [rate];
        let (a, b) =
            confab_sdk::futures_util::join!(store.check(&served[0].0, &checks), store.check(&served[1].0, &checks));
        for d in [a, b] {
            let d = d.expect("answered after the refused batch");
            assert!(d[0].allowed && d[0].remaining == 4, "{d:?}");
        }
        assert!(store.shared.alone.load(Ordering::Relaxed));
        let again = store.check(&served[0].0, &checks).await.unwrap();
        assert_eq!(again[0].remaining, 3, "{again:?}");
        // One key a command: this connection cannot delete across slots.
        for (who, _) in &served {
            let key = cluster.key(&format!("{{c:{who}}}:rl:per_min"));
            let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
        }
    }
}
