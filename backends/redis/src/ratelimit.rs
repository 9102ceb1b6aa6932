//! Rate-limit counters in Redis, shared by every node (`confab_contract::cluster::
//! ratelimit_store`). The arithmetic is `confab_sdk::ratelimit::gcra` and the quota count,
//! run for all of one request's rules in one Lua script, on Redis's clock, so nodes agree.

use std::sync::Arc;

use confab_sdk::async_trait;
use confab_sdk::ratelimit::{Check, Decision, Limit, RateLimitStore, quota_decision};
use confab_sdk::storage::StorageResult;
use redis::Script;

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

/// Counters in Redis, shared by every node: `<prefix>{c:<who>}:rl:<rule>` holds a bucket's
/// TAT (µs, Redis time) and expires when the bucket is full again;
/// `<prefix>{c:<who>}:quota:<window>:<rule>` a count that expires after its window. The
/// hash tag keeps one client's counters in one Redis Cluster slot, so that one script
/// checks all of a request's rules; its `c:` keeps the tag from being empty (an empty
/// `who`, or one starting with `}`, would hash each key whole). Every key of a call shares
/// the text up to the tag's end, so braces in `who` still give them one tag.
pub struct RedisRateLimitStore {
    cluster: Arc<RedisCluster>,
    script: Script,
}

impl RedisRateLimitStore {
    pub fn new(cluster: Arc<RedisCluster>) -> Self {
        RedisRateLimitStore {
            cluster,
            script: Script::new(CHECKS),
        }
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimitStore {
    async fn check(&self, who: &str, checks: &[Check<'_>]) -> StorageResult<Vec<Decision>> {
        let mut call = self.script.prepare_invoke();
        for check in checks {
            match check.limit {
                Limit::Rate(rate) => {
                    call.key(self.cluster.key(&format!("{{c:{who}}}:rl:{}", check.rule)));
                    call.arg("r").arg(rate.emission_us).arg(rate.burst);
                }
                Limit::Quota {
                    window,
                    limit,
                    reset_after_ms,
                } => {
                    call.key(self.cluster.key(&format!("{{c:{who}}}:quota:{window}:{}", check.rule)));
                    call.arg("q")
                        .arg(limit)
                        .arg(reset_after_ms.saturating_add(QUOTA_SLACK_MS));
                }
            }
        }
        let mut conn = self.cluster.conn();
        let out: Vec<u64> = self.cluster.run(call.invoke_async(&mut conn)).await?;
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
}
