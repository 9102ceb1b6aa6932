//! Rate-limit counters in Redis, shared by every node (`confab_contract::cluster::
//! ratelimit_store`). The arithmetic is `confab_sdk::ratelimit::gcra`, run in one Lua
//! script per check, on Redis's clock, so nodes agree.

use std::sync::Arc;

use confab_sdk::async_trait;
use confab_sdk::ratelimit::{Decision, Rate, RateLimitStore, quota_decision};
use confab_sdk::storage::StorageResult;
use redis::Script;

use crate::RedisCluster;

/// Keeps quota keys this long past their window, so a late request of the old window
/// still finds its count.
const QUOTA_SLACK_MS: u64 = 60_000;

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
}
