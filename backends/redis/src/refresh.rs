//! Refresh tokens in Redis, shared by every node. Keys of one family share the hash tag
//! `{<family>}` (one Redis Cluster slot), so each script touches one node:
//! - `P rt:{F}:f`: hash `u` user id, `n` username, `revoked`; expires with the family.
//! - `P rt:{F}:t:<sha256 of the secret>`: hash `spent` once used; same expiry.
//! - `P rt:{F}:n:<sha256>`: the successor of a spent token, for the grace only (so a
//!   successor is kept in the clear for at most `grace_secs`).

use std::sync::Arc;

use confab_sdk::async_trait;
use confab_sdk::cluster::{RefreshGrant, RefreshStore, Rotation, new_refresh_token, refresh_parts};
use confab_sdk::ids::random_token;
use confab_sdk::storage::StorageResult;
use redis::Script;

use crate::RedisCluster;

/// KEYS family, token; ARGV user, username, ttl ms.
const ISSUE: &str = r"
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'n', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'live', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// KEYS family, token, successor slot, successor token; ARGV successor, grace ms.
/// -> {'rotated', next, user, username} | {'reused', user} | {'invalid'}.
const ROTATE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'u', 'n', 'revoked')
if not f[1] or f[3] then return {'invalid'} end
local t = redis.call('HMGET', KEYS[2], 'live', 'spent')
if not t[1] then return {'invalid'} end
if not t[2] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl <= 0 then return {'invalid'} end
  redis.call('HSET', KEYS[2], 'spent', 1)
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  redis.call('HSET', KEYS[4], 'live', 1)
  redis.call('PEXPIRE', KEYS[4], ttl)
  return {'rotated', ARGV[1], f[1], f[2]}
end
local next = redis.call('GET', KEYS[3])
if next then return {'rotated', next, f[1], f[2]} end
redis.call('HSET', KEYS[1], 'revoked', 1)
return {'reused', f[1]}
";

pub struct RedisRefreshStore {
    cluster: Arc<RedisCluster>,
    issue: Script,
    rotate: Script,
}

impl RedisRefreshStore {
    pub fn new(cluster: Arc<RedisCluster>) -> Self {
        RedisRefreshStore {
            cluster,
            issue: Script::new(ISSUE),
            rotate: Script::new(ROTATE),
        }
    }

    fn key(&self, family: &str, rest: &str) -> String {
        self.cluster.key(&format!("rt:{{{family}}}:{rest}"))
    }
}

#[async_trait]
impl RefreshStore for RedisRefreshStore {
    async fn issue(&self, user_id: &str, username: &str, ttl_secs: u64) -> StorageResult<(String, RefreshGrant)> {
        let family = random_token();
        let token = new_refresh_token(&family);
        let (_, hash) = refresh_parts(&token).expect("a fresh token is well formed");
        let mut call = self.issue.key(self.key(&family, "f"));
        call.key(self.key(&family, &format!("t:{hash}")))
            .arg(user_id)
            .arg(username)
            .arg(ttl_secs.saturating_mul(1000).max(1));
        let mut conn = self.cluster.conn();
        self.cluster.run(call.invoke_async::<i64>(&mut conn)).await?;
        let grant = RefreshGrant {
            family,
            user_id: user_id.to_owned(),
            username: username.to_owned(),
        };
        Ok((token, grant))
    }

    async fn rotate(&self, token: &str, grace_secs: u64) -> StorageResult<Rotation> {
        let Some((family, hash)) = refresh_parts(token) else {
            return Ok(Rotation::Invalid);
        };
        let next = new_refresh_token(family);
        let (_, next_hash) = refresh_parts(&next).expect("a fresh token is well formed");
        let mut call = self.rotate.key(self.key(family, "f"));
        call.key(self.key(family, &format!("t:{hash}")))
            .key(self.key(family, &format!("n:{hash}")))
            .key(self.key(family, &format!("t:{next_hash}")))
            .arg(&next)
            .arg(grace_secs.max(1).saturating_mul(1000));
        let mut conn = self.cluster.conn();
        let answer: Vec<String> = self.cluster.run(call.invoke_async(&mut conn)).await?;
        Ok(match answer.as_slice() {
            [kind, next, user, name] if kind == "rotated" => Rotation::Rotated {
                next: next.clone(),
                grant: RefreshGrant {
                    family: family.to_owned(),
                    user_id: user.clone(),
                    username: name.clone(),
                },
            },
            [kind, user] if kind == "reused" => Rotation::Reused {
                family: family.to_owned(),
                user_id: user.clone(),
            },
            _ => Rotation::Invalid,
        })
    }

    async fn revoke_family(&self, family: &str) -> StorageResult<()> {
        let mut conn = self.cluster.conn();
        let cmd = redis::cmd("HSET")
            .arg(self.key(family, "f"))
            .arg("revoked")
            .arg(1)
            .to_owned();
        // On an expired family this recreates a key without user: harmless (it reads as
        // invalid) and short-lived, so give it a TTL.
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).ignore();
        pipe.cmd("PEXPIRE")
            .arg(self.key(family, "f"))
            .arg(86_400_000)
            .arg("NX")
            .ignore();
        self.cluster.run(pipe.query_async::<()>(&mut conn)).await
    }
}

#[cfg(test)]
mod tests {
    use confab_sdk::futures_util::FutureExt;

    use super::*;
    use crate::testing;
    use confab_contract::cluster as contract;

    #[tokio::test]
    async fn refresh_store_passes_the_contract_across_two_nodes() {
        for config in testing::configs(30) {
            let (a, b) = (testing::cluster(&config).await, testing::cluster(&config).await);
            let (on_a, on_b) = (RedisRefreshStore::new(a.clone()), RedisRefreshStore::new(b));
            let sleeper: contract::Advance =
                Arc::new(|ms| tokio::time::sleep(std::time::Duration::from_millis(ms)).boxed());
            contract::refresh_store(&on_a, Some(&on_b), sleeper).await;
            testing::delete_prefix(&a).await;
        }
    }
}
