//! Rate-limit counters: in process memory for one node, in Redis for a cluster. Both pass
//! `contract::ratelimit_store`. The arithmetic is `confab_sdk::ratelimit::gcra`; the Redis
//! store runs the same in one Lua script per check, on Redis's clock, so nodes agree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::ratelimit::{Decision, Rate, RateLimitStore, gcra};
use confab_sdk::storage::StorageResult;
use redis::Script;

use super::redis::RedisCluster;

/// Below this many entries in a shard, growth alone never triggers a sweep.
const MIN_SWEEP_LEN: usize = 1024;

/// Keeps quota keys this long past their window, so a late request of the old window
/// still finds its count.
const QUOTA_SLACK_MS: u64 = 60_000;

fn quota_decision(allowed: bool, count: u64, limit: u64, reset_after_ms: u64) -> Decision {
    Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        retry_after_ms: if allowed { 0 } else { reset_after_ms.max(1) },
        reset_after_ms,
    }
}

#[derive(Default)]
struct Counters {
    /// key -> theoretical arrival time (µs, clock time).
    tats: HashMap<String, u64>,
    /// key -> (window, count).
    quotas: HashMap<String, (i64, u64)>,
    sweep_at_len: usize,
    quota_sweep_at_len: usize,
}

/// Shards of the in-process counters: every socket event of a limited kind takes one
/// lock, so they are spread over several.
const SHARDS: usize = 16;

/// Counters in process memory, for a single node. Entries whose bucket is full again
/// (TAT in the past) carry no information and are swept when a shard's map has doubled.
pub struct LocalRateLimitStore {
    clock: SharedClock,
    shards: Vec<Mutex<Counters>>,
}

impl LocalRateLimitStore {
    pub fn new(clock: SharedClock) -> Self {
        let shard = || {
            Mutex::new(Counters {
                sweep_at_len: MIN_SWEEP_LEN,
                quota_sweep_at_len: MIN_SWEEP_LEN,
                ..Counters::default()
            })
        };
        LocalRateLimitStore {
            clock,
            shards: (0..SHARDS).map(|_| shard()).collect(),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Counters> {
        // FNV-1a: cheap, and keys are ours (rule name and an id), not an attacker's choice
        // of collisions that matter: a shard only bounds contention.
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        // Every update is a single insert: a poisoned lock is safe to reuse.
        self.shards[(h % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let c = s.lock().unwrap_or_else(|e| e.into_inner());
                c.tats.len() + c.quotas.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimitStore for LocalRateLimitStore {
    async fn check(&self, key: &str, rate: Rate) -> StorageResult<Decision> {
        let now_us = u64::try_from(self.clock.now_millis()).unwrap_or(0).saturating_mul(1000);
        let mut c = self.shard(key);
        if c.tats.len() >= c.sweep_at_len {
            c.tats.retain(|_, tat| *tat > now_us);
            c.sweep_at_len = (c.tats.len() * 2).max(MIN_SWEEP_LEN);
        }
        let (decision, tat) = gcra(now_us, c.tats.get(key).copied(), rate);
        if let Some(tat) = tat {
            match c.tats.get_mut(key) {
                Some(t) => *t = tat,
                None => {
                    c.tats.insert(key.to_owned(), tat);
                }
            }
        }
        Ok(decision)
    }

    async fn quota(&self, key: &str, window: i64, limit: u64, reset_after_ms: u64) -> StorageResult<Decision> {
        let mut c = self.shard(key);
        if c.quotas.len() >= c.quota_sweep_at_len {
            // Old windows are over: their counts are never read again.
            c.quotas.retain(|_, (w, _)| *w >= window);
            c.quota_sweep_at_len = (c.quotas.len() * 2).max(MIN_SWEEP_LEN);
        }
        if !c.quotas.contains_key(key) {
            c.quotas.insert(key.to_owned(), (window, 0));
        }
        let Some(entry) = c.quotas.get_mut(key) else {
            return Ok(quota_decision(true, 0, limit, reset_after_ms));
        };
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit {
            return Ok(quota_decision(false, entry.1, limit, reset_after_ms));
        }
        entry.1 += 1;
        Ok(quota_decision(true, entry.1, limit, reset_after_ms))
    }
}

/// KEYS[1] the bucket; ARGV emission interval (µs), burst. Returns {allowed, remaining,
/// retry after µs, reset after µs}. Times are Redis's (`TIME`): nodes need not agree.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local e = tonumber(ARGV[1])
local window = e * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + e
if new - now > window then
  return {0, 0, new - now - window, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.max(1, math.ceil((new - now) / 1000)))
return {1, math.floor((window - (new - now)) / e), 0, new - now}
";

/// KEYS[1] the count of one window; ARGV limit, expiry (ms). Returns {allowed, count}.
const QUOTA: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return {0, n} end
n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, n}
";

/// Counters in Redis, shared by every node: `<prefix>rl:<key>` holds a bucket's TAT (µs,
/// Redis time) and expires when the bucket is full again; `<prefix>quota:<window>:<key>`
/// a count that expires after its window.
pub struct RedisRateLimitStore {
    cluster: Arc<RedisCluster>,
    gcra: Script,
    quota: Script,
}

impl RedisRateLimitStore {
    pub fn new(cluster: Arc<RedisCluster>) -> Self {
        RedisRateLimitStore {
            cluster,
            gcra: Script::new(GCRA),
            quota: Script::new(QUOTA),
        }
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimitStore {
    async fn check(&self, key: &str, rate: Rate) -> StorageResult<Decision> {
        let mut conn = self.cluster.conn();
        let mut call = self.gcra.key(self.cluster.key(&format!("rl:{key}")));
        call.arg(rate.emission_us).arg(rate.burst);
        let (allowed, remaining, retry_us, reset_us): (i64, u64, u64, u64) =
            self.cluster.run(call.invoke_async(&mut conn)).await?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: u64::from(rate.burst),
            remaining,
            retry_after_ms: retry_us.div_ceil(1000),
            reset_after_ms: reset_us.div_ceil(1000),
        })
    }

    async fn quota(&self, key: &str, window: i64, limit: u64, reset_after_ms: u64) -> StorageResult<Decision> {
        let mut conn = self.cluster.conn();
        let mut call = self.quota.key(self.cluster.key(&format!("quota:{window}:{key}")));
        call.arg(limit).arg(reset_after_ms.saturating_add(QUOTA_SLACK_MS));
        let (allowed, count): (i64, u64) = self.cluster.run(call.invoke_async(&mut conn)).await?;
        Ok(quota_decision(allowed == 1, count, limit, reset_after_ms))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use confab_sdk::clock::OffsetClock;
    use confab_sdk::futures_util::FutureExt;

    use super::*;
    use crate::cluster::contract;
    use crate::cluster::redis::testing;

    #[tokio::test]
    async fn local_store_passes_the_contract() {
        let c = Arc::new(OffsetClock::new(0));
        let store = LocalRateLimitStore::new(c.clone());
        let advance: contract::Advance = Arc::new(move |ms| {
            c.advance(ms as i64);
            async {}.boxed()
        });
        contract::ratelimit_store(&store, None, advance).await;
    }

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

    /// The cost of one in-process check (what a limited socket event pays per rule):
    /// `cargo test --release --lib check_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn check_cost() {
        use std::time::Instant;
        let store = LocalRateLimitStore::new(Arc::new(confab_sdk::clock::SystemClock));
        let rate = Rate::parse("100000/s", 1_000_000).unwrap();
        let users: Vec<String> = (0..100).map(|i| format!("send:{i:024x}")).collect();
        let n = 1_000_000;
        let started = Instant::now();
        for i in 0..n {
            let d = store
                .check(&users[i % users.len()], rate)
                .now_or_never()
                .unwrap()
                .unwrap();
            assert!(d.allowed);
        }
        let rate_ns = started.elapsed().as_nanos() / n as u128;
        let started = Instant::now();
        for i in 0..n {
            let d = store
                .quota(&users[i % users.len()], 1, u64::MAX, 1000)
                .now_or_never()
                .unwrap()
                .unwrap();
            assert!(d.allowed);
        }
        let quota_ns = started.elapsed().as_nanos() / n as u128;
        println!("local store: {rate_ns} ns per rate check, {quota_ns} ns per quota check");
    }

    #[tokio::test]
    async fn full_buckets_are_swept_on_growth() {
        let c = Arc::new(OffsetClock::new(0));
        let store = LocalRateLimitStore::new(c.clone());
        let rate = Rate::parse("10/s", 1).unwrap();
        for round in 0..5 {
            for n in 0..MIN_SWEEP_LEN * SHARDS {
                store.check(&format!("r{round}k{n}"), rate).await.unwrap();
            }
            c.advance(1_000);
            assert!(
                store.len() <= 3 * MIN_SWEEP_LEN * SHARDS,
                "round {round}: {}",
                store.len()
            );
        }
    }
}
