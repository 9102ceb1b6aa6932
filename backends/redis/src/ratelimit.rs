//! Rate-limit counters in Redis, shared by every node (`confab_contract::cluster::
//! ratelimit_store`). The arithmetic is `confab_sdk::ratelimit::gcra` and the quota count,
//! run for all of one request's rules in one Lua script, on Redis's clock, so nodes agree.

use std::sync::{Arc, Mutex, Weak};

use confab_sdk::async_trait;
use confab_sdk::ratelimit::{Check, Decision, Limit, RateLimitStore, quota_decision};
use confab_sdk::storage::{StorageError, StorageResult};
use redis::Script;
use tokio::sync::{Notify, oneshot};

use crate::RedisCluster;

/// Keeps quota keys this long past their window, so a late request of the old window
/// still finds its count.
const QUOTA_SLACK_MS: u64 = 60_000;

/// KEYS one counter per check; ARGV three per check: `r`, emission interval (µs), burst
/// for a GCRA rate, or `q`, limit, expiry (ms) for a quota. Checks in order and stops
/// after the first refusal. Returns four numbers per check made: allowed, then remaining,
/// retry after µs, reset after µs (a rate) or the count (a quota). Times are Redis's
/// (`TIME`): nodes need not agree.
const CHECKS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local function put(a, b, c, d)
  out[#out + 1] = a; out[#out + 1] = b; out[#out + 1] = c; out[#out + 1] = d
end
for i, key in ipairs(KEYS) do
  local x, y = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if ARGV[3 * i - 2] == 'r' then
    local window = x * y
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local new = tat + x
    if new - now > window then
      put(0, 0, new - now - window, tat - now)
      return out
    end
    redis.call('SET', key, string.format('%.0f', new), 'PX', math.max(1, math.ceil((new - now) / 1000)))
    put(1, math.floor((window - (new - now)) / x), 0, new - now)
  else
    local n = tonumber(redis.call('GET', key) or '0')
    if n >= x then
      put(0, n, 0, 0)
      return out
    end
    n = redis.call('INCR', key)
    if n == 1 then redis.call('PEXPIRE', key, y) end
    put(1, n, 0, 0)
  end
end
return out
";

/// `CHECKS` for several requests at once (on a single Redis, where any keys may share a
/// script): KEYS every request's counters, request after request; ARGV the number of
/// requests, then each request's number of checks, then three per check as in `CHECKS`.
/// Each request stops after its own first refusal. Returns, per request, the number of
/// checks made, then four numbers per check made.
const BATCH: &str = r"
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
struct Batcher {
    cluster: Arc<RedisCluster>,
    script: Script,
    queue: Mutex<Vec<Waiting>>,
    wake: Arc<Notify>,
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
    cluster: Arc<RedisCluster>,
    script: Script,
    /// None on a Redis Cluster.
    batcher: Option<Arc<Batcher>>,
}

impl Drop for RedisRateLimitStore {
    fn drop(&mut self) {
        // The batching task waits on this; let it see the store is gone.
        if let Some(b) = self.batcher.take() {
            let wake = b.wake.clone();
            drop(b);
            wake.notify_one();
        }
    }
}

impl RedisRateLimitStore {
    pub fn new(cluster: Arc<RedisCluster>) -> Self {
        let batcher = (!cluster.conn().is_cluster()).then(|| {
            let b = Arc::new(Batcher {
                cluster: cluster.clone(),
                script: Script::new(BATCH),
                queue: Mutex::new(Vec::new()),
                wake: Arc::new(Notify::new()),
            });
            tokio::spawn(run_batches(Arc::downgrade(&b), b.wake.clone()));
            b
        });
        RedisRateLimitStore {
            cluster,
            script: Script::new(CHECKS),
            batcher,
        }
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
                        .push(self.cluster.key(&format!("{{c:{who}}}:rl:{}", check.rule)));
                    request.args.push(("r", rate.emission_us, u64::from(rate.burst)));
                }
                Limit::Quota {
                    window,
                    limit,
                    reset_after_ms,
                } => {
                    request
                        .keys
                        .push(self.cluster.key(&format!("{{c:{who}}}:quota:{window}:{}", check.rule)));
                    request
                        .args
                        .push(("q", limit, reset_after_ms.saturating_add(QUOTA_SLACK_MS)));
                }
            }
        }
        request
    }

    /// One script call for this request alone.
    async fn call_alone(&self, request: Request) -> StorageResult<Vec<u64>> {
        let mut call = self.script.prepare_invoke();
        for (key, (kind, x, y)) in request.keys.iter().zip(&request.args) {
            call.key(key).arg(*kind).arg(*x).arg(*y);
        }
        let mut conn = self.cluster.conn();
        self.cluster.run(call.invoke_async(&mut conn)).await
    }
}

/// Takes what queued and makes one script call of it, round after round, until the store
/// is gone.
async fn run_batches(batcher: Weak<Batcher>, wake: Arc<Notify>) {
    loop {
        let Some(b) = batcher.upgrade() else { return };
        let taken = {
            let mut queue = b.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect::<Vec<_>>()
        };
        if taken.is_empty() {
            drop(b);
            // What queued since the take is not missed: `notify_one` keeps a permit for
            // the next wait.
            wake.notified().await;
            continue;
        }
        b.call(taken).await;
    }
}

impl Batcher {
    async fn call(&self, taken: Vec<Waiting>) {
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
        let answer: StorageResult<Vec<u64>> = self.cluster.run(call.invoke_async(&mut conn)).await;
        let mut out = match answer {
            Ok(out) => out.into_iter(),
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
        let out = match &self.batcher {
            None => self.call_alone(request).await?,
            Some(b) => {
                let (reply, answer) = oneshot::channel();
                let was_empty = {
                    let mut queue = b.queue.lock().unwrap_or_else(|e| e.into_inner());
                    queue.push(Waiting { request, reply });
                    queue.len() == 1
                };
                if was_empty {
                    b.wake.notify_one();
                }
                answer.await.map_err(|_| StorageError::Closed)??
            }
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

    /// Many requests at once, of several clients and with a rule that refuses first:
    /// batched into few script calls on a single Redis, each client's count stays its own.
    #[tokio::test]
    async fn concurrent_requests_of_many_clients_are_counted_each_on_its_own() {
        use confab_sdk::futures_util::future::join_all;
        use confab_sdk::ratelimit::Rate;
        for config in testing::configs(30) {
            let cluster = testing::cluster(&config).await;
            let store = RedisRateLimitStore::new(cluster.clone());
            let rate = Limit::Rate(Rate {
                emission_us: 60_000_000,
                burst: 5,
            });
            let quota = |limit| Limit::Quota {
                window: 1,
                limit,
                reset_after_ms: 60_000,
            };
            let checks = [
                Check {
                    rule: "per_day",
                    limit: quota(3),
                },
                Check {
                    rule: "per_min",
                    limit: rate,
                },
            ];
            let calls = (0..60).map(|i| {
                let who = format!("client-{}", i % 6);
                let store = &store;
                let checks = &checks;
                async move { (who.clone(), store.check(&who, checks).await.expect("check")) }
            });
            let mut admitted = std::collections::HashMap::<String, usize>::new();
            for (who, decisions) in join_all(calls).await {
                assert!(!decisions.is_empty() && decisions.len() <= 2, "{decisions:?}");
                if decisions.iter().all(|d| d.allowed) {
                    assert_eq!(decisions.len(), 2);
                    *admitted.entry(who).or_default() += 1;
                } else {
                    assert!(!decisions.last().unwrap().allowed, "it stops at the refusal");
                }
            }
            // The quota (3) refuses first; each client's refused requests are not counted
            // against its rate, so a later request still finds 2 of the 5 left.
            assert_eq!(admitted.len(), 6, "{admitted:?}");
            assert!(admitted.values().all(|&n| n == 3), "{admitted:?}");
            let after = store.check("client-0", &checks[1..]).await.unwrap();
            assert_eq!((after[0].allowed, after[0].remaining), (true, 1), "{after:?}");
            testing::delete_prefix(&cluster).await;
        }
    }
}
