//! Sessions and revoked token ids in Redis, expired by Redis itself (key expiry).
//!
//! A session is a hash `{u, n, abs, idle}` at `<prefix>session:<id>` whose TTL is the
//! smaller of the idle timeout and what is left of the absolute lifetime; every hit moves
//! it forward, never past `abs`. Times are Redis's (`TIME`), so nodes agree on them. A
//! revoked `jti` is a key `<prefix>revoked:<jti>` that expires when the token would have.

use std::sync::Arc;

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{RevocationStore, SessionData, SessionStore};
use confab_sdk::ids::random_token;
use confab_sdk::storage::{StorageError, StorageResult};
use redis::Script;

use crate::RedisCluster;
use confab_sdk::memory::MemoryRevocationStore;

/// KEYS[1] session; ARGV user, username, absolute ms, idle ms, the login's token id ('' if
/// none), until when it is accepted (unix s), its refresh family (''). 0 if the id is taken.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local abs, idle = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'n', ARGV[2], 'abs', now + abs, 'idle', idle, 't', ARGV[5], 'x', ARGV[6], 'f', ARGV[7])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.min(abs, idle)))
return 1
";

/// KEYS[1] session. `{user, username, token id, token until, family}` of a live session,
/// extending its idle timeout (sessions of older releases have no token fields).
const GET: &str = r"
local v = redis.call('HMGET', KEYS[1], 'u', 'n', 'abs', 'idle', 't', 'x', 'f')
if not v[1] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = tonumber(v[3]) - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(v[4]), left))
return {v[1], v[2], v[5] or '', v[6] or '0', v[7] or ''}
";

fn ms(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}

pub struct RedisSessionStore {
    cluster: Arc<RedisCluster>,
    create: Script,
    get: Script,
}

impl RedisSessionStore {
    pub fn new(cluster: Arc<RedisCluster>) -> Self {
        RedisSessionStore {
            cluster,
            create: Script::new(CREATE),
            get: Script::new(GET),
        }
    }

    fn key(&self, id: &str) -> String {
        self.cluster.key(&format!("session:{id}"))
    }
}

/// Ids are 32 hex digits; anything else (a forged cookie) cannot be one and costs no
/// round trip.
fn plausible(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, data: SessionData, absolute_secs: u64, idle_secs: u64) -> StorageResult<String> {
        // 128 random bits: a collision is practically impossible, but never overwrite one.
        for _ in 0..4 {
            let id = random_token();
            let mut conn = self.cluster.conn();
            let mut call = self.create.key(self.key(&id));
            let (jti, until) = data.token.clone().unwrap_or_default();
            call.arg(&data.user_id)
                .arg(&data.username)
                .arg(ms(absolute_secs))
                .arg(ms(idle_secs))
                .arg(jti)
                .arg(until)
                .arg(data.family.as_deref().unwrap_or_default());
            let created: i64 = self.cluster.run(call.invoke_async(&mut conn)).await?;
            if created == 1 {
                return Ok(id);
            }
        }
        Err(StorageError::Backend("could not find a free session id".into()))
    }

    async fn get(&self, id: &str) -> StorageResult<Option<SessionData>> {
        if !plausible(id) {
            return Ok(None);
        }
        let mut conn = self.cluster.conn();
        let call = self.get.key(self.key(id));
        let found: Option<(String, String, String, i64, String)> =
            self.cluster.run(call.invoke_async(&mut conn)).await?;
        Ok(found.map(|(user_id, username, jti, until, family)| SessionData {
            user_id,
            username,
            token: (!jti.is_empty()).then_some((jti, until)),
            family: (!family.is_empty()).then_some(family),
        }))
    }

    async fn delete(&self, id: &str) -> StorageResult<()> {
        if !plausible(id) {
            return Ok(());
        }
        let mut conn = self.cluster.conn();
        let key = self.key(id);
        self.cluster
            .run(redis::cmd("DEL").arg(key).query_async::<()>(&mut conn))
            .await
    }
}

/// Revoked token ids in Redis. Revocations made on this node are also kept in memory, so
/// that with `revocations_fail_open` they are still enforced while Redis is down.
pub struct RedisRevocationStore {
    cluster: Arc<RedisCluster>,
    clock: SharedClock,
    mine: MemoryRevocationStore,
    fail_open: bool,
}

impl RedisRevocationStore {
    pub fn new(cluster: Arc<RedisCluster>, clock: SharedClock, fail_open: bool) -> Self {
        RedisRevocationStore {
            cluster,
            mine: MemoryRevocationStore::new(clock.clone()),
            clock,
            fail_open,
        }
    }

    fn key(&self, jti: &str) -> String {
        self.cluster.key(&format!("revoked:{jti}"))
    }
}

#[async_trait]
impl RevocationStore for RedisRevocationStore {
    async fn revoke(&self, jti: &str, until_unix_secs: i64) -> StorageResult<()> {
        self.mine.revoke(jti, until_unix_secs).await?;
        let until_ms = until_unix_secs.saturating_mul(1000);
        if until_ms <= self.clock.now_millis() {
            // The token has expired already: nothing to remember.
            return Ok(());
        }
        let key = self.key(jti);
        let mut conn = self.cluster.conn();
        // Create it, or move its expiry later (never earlier): revoking twice keeps the
        // later deadline.
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(until_ms)
            .ignore();
        pipe.cmd("PEXPIREAT").arg(&key).arg(until_ms).arg("GT").ignore();
        self.cluster.run(pipe.query_async::<()>(&mut conn)).await
    }

    async fn is_revoked(&self, jti: &str) -> StorageResult<bool> {
        let mut conn = self.cluster.conn();
        let key = self.key(jti);
        match self
            .cluster
            .run(redis::cmd("EXISTS").arg(key).query_async::<bool>(&mut conn))
            .await
        {
            Ok(revoked) => Ok(revoked),
            Err(StorageError::Busy) if self.fail_open => self.mine.is_revoked(jti).await,
            Err(e) => Err(e),
        }
    }

    /// One `EXISTS` for all of them (split by slot on a Redis Cluster).
    async fn any_revoked(&self, ids: &[&str]) -> StorageResult<bool> {
        if ids.is_empty() {
            return Ok(false);
        }
        let mut conn = self.cluster.conn();
        let keys: Vec<String> = ids.iter().map(|id| self.key(id)).collect();
        match self
            .cluster
            .run(redis::cmd("EXISTS").arg(keys).query_async::<u64>(&mut conn))
            .await
        {
            Ok(found) => Ok(found > 0),
            Err(StorageError::Busy) if self.fail_open => self.mine.any_revoked(ids).await,
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use confab_sdk::clock::SystemClock;
    use confab_sdk::futures_util::FutureExt;

    use super::*;
    use crate::testing;
    use confab_contract::cluster as contract;

    fn sleeper() -> contract::Advance {
        Arc::new(|ms| tokio::time::sleep(Duration::from_millis(ms)).boxed())
    }

    #[tokio::test]
    async fn session_store_passes_the_contract() {
        for config in testing::configs(30) {
            let cluster = testing::cluster(&config).await;
            let store = RedisSessionStore::new(cluster.clone());
            contract::session_store(&store, sleeper()).await;
            testing::delete_prefix(&cluster).await;
        }
    }

    #[tokio::test]
    async fn revocation_store_passes_the_contract() {
        for config in testing::configs(30) {
            let cluster = testing::cluster(&config).await;
            let store = RedisRevocationStore::new(cluster.clone(), Arc::new(SystemClock), true);
            contract::revocation_store(&store, Arc::new(SystemClock), sleeper()).await;
            testing::delete_prefix(&cluster).await;
        }
    }

    #[tokio::test]
    async fn sessions_are_shared_between_nodes_and_expire_by_key_ttl() {
        for config in testing::configs(30) {
            let (a, b) = (testing::cluster(&config).await, testing::cluster(&config).await);
            let (on_a, on_b) = (RedisSessionStore::new(a.clone()), RedisSessionStore::new(b));
            let alice = SessionData {
                user_id: "0123456789abcdef01234567".into(),
                username: "alice".into(),
                token: Some(("jti-1".into(), 1_900_000_000)),
                family: Some("fam-1".into()),
            };
            let id = on_a.create(alice.clone(), 60, 30).await.unwrap();
            assert_eq!(on_b.get(&id).await.unwrap(), Some(alice));
            let mut conn = a.conn();
            let ttl: i64 = redis::cmd("PTTL")
                .arg(on_a.key(&id))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(
                (29_000..=30_000).contains(&ttl),
                "the key expires with the idle timeout: {ttl}"
            );
            on_b.delete(&id).await.unwrap();
            assert_eq!(on_a.get(&id).await.unwrap(), None);
            testing::delete_prefix(&a).await;
        }
    }
}
