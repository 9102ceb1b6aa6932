//! Presence in Redis: each node counts its own sockets per user and heart-beats; a user
//! is online while some live node counts a socket of theirs.
//!
//! Keys (under the prefix, all with the `{presence}` hash tag, so one Redis Cluster slot):
//! - `{presence}:nodes`: sorted set, node id -> deadline (ms, Redis time). A node is live
//!   until its deadline; every heartbeat moves it `heartbeat_ttl_secs` ahead.
//! - `{presence}:beats`: hash, node id -> its last heartbeat (ms), the `lastSeen` of users
//!   whose node died.
//! - `{presence}:node:<node>`: hash, user id -> sockets of that user on that node.
//! - `{presence}:user:<user>`: set of the nodes that count sockets of that user.
//! - `{presence}:seen`: hash, user id -> when their last socket closed (ms).
//!
//! A node that dies leaves its entries behind, but they stop counting at its deadline;
//! the next sweep of any live node removes them and reports those users offline (once:
//! the removal is atomic). Each node keeps its counts in memory too: when Redis lost
//! them (restarted empty) or missed updates (an outage), the next sweep writes them
//! back and reports the users whose state that changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{PresenceState, PresenceStore};
use confab_sdk::ids::random_token;
use confab_sdk::storage::{StorageError, StorageResult};
use confab_sdk::time::from_millis;
use redis::Script;

use crate::RedisCluster;

/// Helpers every script starts with. ARGV[1] is always the base of the keys, KEYS[1] the
/// nodes key (which routes the script to its slot on a Redis Cluster).
const PRELUDE: &str = r"
local P = ARGV[1]
local NODES = P .. 'nodes'
local SEEN = P .. 'seen'
local function node_key(n) return P .. 'node:' .. n end
local function user_key(u) return P .. 'user:' .. u end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live(n)
  local deadline = redis.call('ZSCORE', NODES, n)
  return deadline and tonumber(deadline) > now
end
local function online(u)
  for _, n in ipairs(redis.call('SMEMBERS', user_key(u))) do
    if live(n) and tonumber(redis.call('HGET', node_key(n), u) or '0') > 0 then return true end
  end
  return false
end
local function seen(u) return redis.call('HGET', SEEN, u) or '' end
";

/// ARGV node, user -> {became online, this node is not live, seen}.
const CONNECT: &str = r"
local node, u = ARGV[2], ARGV[3]
local was = online(u)
redis.call('HINCRBY', node_key(node), u, 1)
redis.call('SADD', user_key(u), node)
local became = (not was) and online(u)
return {became and 1 or 0, live(node) and 0 or 1, seen(u)}
";

/// ARGV node, user, now (ms) -> {went offline, seen}.
const DISCONNECT: &str = r"
local node, u = ARGV[2], ARGV[3]
local left = redis.call('HINCRBY', node_key(node), u, -1)
if left > 0 then return {0, ''} end
redis.call('HDEL', node_key(node), u)
redis.call('SREM', user_key(u), node)
if online(u) then return {0, ''} end
redis.call('HSET', SEEN, u, ARGV[4])
return {1, ARGV[4]}
";

/// ARGV user... -> {{online, seen}...}.
const STATES: &str = r"
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = {online(ARGV[i]) and 1 or 0, seen(ARGV[i])}
end
return out
";

/// ARGV node, ttl (ms), now by the node's clock (ms) -> 1 if the node was not live.
const HEARTBEAT: &str = r"
local node = ARGV[2]
local was = live(node)
redis.call('ZADD', NODES, now + tonumber(ARGV[3]), node)
redis.call('HSET', P .. 'beats', node, ARGV[4])
return was and 0 or 1
";

/// ARGV node, now (ms), then user, count pairs: this node's counts replace what Redis
/// has for it. -> {{user, online, seen}...} for the users whose state changed.
const RESYNC: &str = r"
local node, stamp = ARGV[2], ARGV[3]
local key = node_key(node)
local users, before = {}, {}
local function note(u, here)
  if before[u] == nil then users[#users + 1] = u; before[u] = false end
  if here then before[u] = true end
end
local old = redis.call('HGETALL', key)
for i = 1, #old, 2 do note(old[i], tonumber(old[i + 1]) > 0) end
for i = 4, #ARGV, 2 do note(ARGV[i], false) end
redis.call('DEL', key)
for _, u in ipairs(users) do redis.call('SREM', user_key(u), node) end
for _, u in ipairs(users) do
  if not before[u] then before[u] = online(u) end
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  redis.call('SADD', user_key(ARGV[i]), node)
end
local out = {}
for _, u in ipairs(users) do
  local after = online(u)
  if before[u] and not after then
    redis.call('HSET', SEEN, u, stamp)
    out[#out + 1] = {u, 0, stamp}
  elseif after and not before[u] then
    out[#out + 1] = {u, 1, seen(u)}
  end
end
return out
";

/// ARGV limit -> {{user, seen}...}: users of dead nodes now offline. The dead nodes'
/// entries are removed in the same step, so only one sweeper reports each.
const REAP: &str = r"
local out = {}
local BEATS = P .. 'beats'
for _, n in ipairs(redis.call('ZRANGEBYSCORE', NODES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZREM', NODES, n)
  local beat = redis.call('HGET', BEATS, n) or tostring(now)
  redis.call('HDEL', BEATS, n)
  local users = redis.call('HKEYS', node_key(n))
  redis.call('DEL', node_key(n))
  for _, u in ipairs(users) do
    redis.call('SREM', user_key(u), n)
    if not online(u) then
      redis.call('HSET', SEEN, u, beat)
      out[#out + 1] = {u, beat}
    end
  end
end
return out
";

/// Dead nodes removed per sweep (the rest wait for the next one).
const REAP_LIMIT: usize = 100;

struct Scripts {
    connect: Script,
    disconnect: Script,
    states: Script,
    heartbeat: Script,
    resync: Script,
    reap: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

pub struct RedisPresenceStore {
    cluster: Arc<RedisCluster>,
    clock: SharedClock,
    node: String,
    ttl: Duration,
    /// This node's sockets per user: the truth Redis mirrors.
    counts: Mutex<HashMap<String, u32>>,
    /// Redis may disagree with `counts` (an update failed): rewrite it at the next sweep.
    dirty: AtomicBool,
    /// Updates hold it shared; a rewrite holds it alone, so it copies a settled state.
    sync: tokio::sync::RwLock<()>,
    scripts: Scripts,
}

/// Every presence key starts with this: the `{presence}` hash tag puts them all in one
/// slot of a Redis Cluster, so each script touches one node (its keys are built in Lua).
pub(crate) fn key_base(cluster: &RedisCluster) -> String {
    cluster.key("{presence}:")
}

fn seen(ms: &str) -> Option<confab_sdk::time::Timestamp> {
    ms.parse::<i64>().ok().map(from_millis)
}

impl RedisPresenceStore {
    /// Registers this node (a first heartbeat) and returns the store.
    pub async fn start(cluster: Arc<RedisCluster>, clock: SharedClock, ttl: Duration) -> StorageResult<Self> {
        let store = RedisPresenceStore {
            cluster,
            clock,
            node: random_token(),
            ttl,
            counts: Mutex::default(),
            dirty: AtomicBool::new(false),
            sync: tokio::sync::RwLock::new(()),
            scripts: Scripts {
                connect: script(CONNECT),
                disconnect: script(DISCONNECT),
                states: script(STATES),
                heartbeat: script(HEARTBEAT),
                resync: script(RESYNC),
                reap: script(REAP),
            },
        };
        store.heartbeat().await?;
        Ok(store)
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call of `script` with the base of the keys as its first argument.
    fn prepare<'s>(&self, script: &'s Script) -> redis::ScriptInvocation<'s> {
        let base = key_base(&self.cluster);
        let mut call = script.prepare_invoke();
        call.key(format!("{base}nodes")).arg(base);
        call
    }

    async fn exec<T: redis::FromRedisValue>(&self, call: redis::ScriptInvocation<'_>) -> StorageResult<T> {
        let mut conn = self.cluster.conn();
        self.cluster.run(call.invoke_async(&mut conn)).await
    }

    /// Returns whether this node was not live (its entries expired or were lost).
    async fn heartbeat(&self) -> StorageResult<bool> {
        let ttl = self.ttl.as_millis() as u64;
        let mut call = self.prepare(&self.scripts.heartbeat);
        call.arg(&self.node).arg(ttl).arg(self.clock.now_millis());
        let stale: i64 = self.exec(call).await?;
        Ok(stale == 1)
    }

    /// Writes this node's counts over what Redis has for it.
    async fn resync(&self) -> StorageResult<Vec<PresenceState>> {
        let _alone = self.sync.write().await;
        let counts: Vec<(String, u32)> = self.counts().iter().map(|(u, c)| (u.clone(), *c)).collect();
        let mut call = self.prepare(&self.scripts.resync);
        call.arg(&self.node).arg(self.clock.now_millis());
        for (u, c) in &counts {
            call.arg(u).arg(c);
        }
        let changed: Vec<(String, i64, String)> = self.exec(call).await?;
        Ok(changed
            .into_iter()
            .map(|(u, online, ms)| PresenceState {
                user_id: u,
                online: online == 1,
                last_seen: seen(&ms),
            })
            .collect())
    }

    /// A failed update leaves Redis behind this node's counts.
    fn missed<T>(&self, e: StorageError) -> StorageResult<Option<T>> {
        self.dirty.store(true, Ordering::Release);
        match e {
            // Outages are logged once by the health state; the sweep catches up.
            StorageError::Busy => Ok(None),
            e => Err(e),
        }
    }

    #[cfg(test)]
    pub(crate) fn node(&self) -> &str {
        &self.node
    }
}

#[async_trait]
impl PresenceStore for RedisPresenceStore {
    async fn connected(&self, user_id: &str) -> StorageResult<Option<PresenceState>> {
        let _shared = self.sync.read().await;
        *self.counts().entry(user_id.to_owned()).or_default() += 1;
        let mut call = self.prepare(&self.scripts.connect);
        call.arg(&self.node).arg(user_id);
        let result: StorageResult<(i64, i64, String)> = self.exec(call).await;
        match result {
            Ok((became, stale, ms)) => {
                if stale == 1 {
                    self.dirty.store(true, Ordering::Release);
                }
                Ok((became == 1).then(|| PresenceState::online(user_id, seen(&ms))))
            }
            Err(e) => self.missed(e),
        }
    }

    async fn disconnected(&self, user_id: &str) -> StorageResult<Option<PresenceState>> {
        let _shared = self.sync.read().await;
        {
            let mut counts = self.counts();
            match counts.get_mut(user_id) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    counts.remove(user_id);
                }
                // Never counted here: nothing to undo.
                None => return Ok(None),
            }
        }
        let mut call = self.prepare(&self.scripts.disconnect);
        call.arg(&self.node).arg(user_id).arg(self.clock.now_millis());
        let result: StorageResult<(i64, String)> = self.exec(call).await;
        match result {
            Ok((went, ms)) => Ok((went == 1).then(|| PresenceState::offline(user_id, seen(&ms)))),
            Err(e) => self.missed(e),
        }
    }

    async fn states(&self, user_ids: &[String]) -> StorageResult<Vec<PresenceState>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.prepare(&self.scripts.states);
        for u in user_ids {
            call.arg(u);
        }
        let found: Vec<(i64, String)> = self.exec(call).await?;
        if found.len() != user_ids.len() {
            return Err(StorageError::Backend(
                "presence: states answered for other users".into(),
            ));
        }
        Ok(user_ids
            .iter()
            .zip(found)
            .map(|(u, (online, ms))| PresenceState {
                user_id: u.clone(),
                online: online == 1,
                last_seen: seen(&ms),
            })
            .collect())
    }

    fn sweep_interval(&self) -> Option<Duration> {
        Some((self.ttl / 3).max(Duration::from_millis(200)))
    }

    async fn sweep(&self) -> StorageResult<Vec<PresenceState>> {
        let stale = self.heartbeat().await?;
        let mut changes = Vec::new();
        if stale | self.dirty.swap(false, Ordering::AcqRel) {
            match self.resync().await {
                Ok(c) => changes = c,
                Err(e) => {
                    self.dirty.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        let mut call = self.prepare(&self.scripts.reap);
        call.arg(REAP_LIMIT);
        let reaped: Vec<(String, String)> = self.exec(call).await?;
        changes.extend(reaped.into_iter().map(|(u, ms)| PresenceState::offline(&u, seen(&ms))));
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confab_sdk::clock::SystemClock;

    use super::*;
    use crate::testing;
    use confab_contract::cluster as contract;

    async fn node(cluster: &Arc<RedisCluster>, ttl_ms: u64) -> RedisPresenceStore {
        RedisPresenceStore::start(cluster.clone(), Arc::new(SystemClock), Duration::from_millis(ttl_ms))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn presence_store_passes_the_contract_across_two_nodes() {
        for config in testing::configs(30) {
            let cluster = testing::cluster(&config).await;
            let (a, b) = (node(&cluster, 30_000).await, node(&cluster, 30_000).await);
            contract::presence_store(&a, Some(&b), Arc::new(SystemClock)).await;
            testing::delete_prefix(&cluster).await;
        }
    }

    #[tokio::test]
    async fn a_dead_nodes_users_go_offline_once_its_heartbeat_expires() {
        for config in testing::configs(1) {
            let cluster = testing::cluster(&config).await;
            let (a, b) = (node(&cluster, 1_000).await, node(&cluster, 1_000).await);
            let (alice, bob) = (
                "aaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
                "bbbbbbbbbbbbbbbbbbbbbbbb".to_owned(),
            );
            b.connected(&alice).await.unwrap().expect("alice online");
            b.connected(&bob).await.unwrap().expect("bob online");
            a.connected(&bob).await.unwrap();
            // b dies: it never closes its sockets nor beats again; a keeps beating.
            let mut offline = Vec::new();
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                offline.extend(a.sweep().await.unwrap());
            }
            assert_eq!(offline.len(), 1, "only alice, reported once: {offline:?}");
            assert_eq!(offline[0].user_id, alice);
            assert!(!offline[0].online && offline[0].last_seen.is_some());
            let states = a.states(&[alice.clone(), bob.clone()]).await.unwrap();
            assert!(!states[0].online, "alice's only node died");
            assert!(states[1].online, "bob is still connected to a");
            let mut conn = cluster.conn();
            let gone: bool = redis::cmd("EXISTS")
                .arg(format!("{}node:{}", key_base(&cluster), b.node()))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!gone, "the dead node's entries are removed");
            testing::delete_prefix(&cluster).await;
        }
    }

    #[tokio::test]
    async fn counts_lost_by_redis_are_written_back_by_the_next_sweep() {
        for config in testing::configs(30) {
            let cluster = testing::cluster(&config).await;
            let a = node(&cluster, 30_000).await;
            let alice = "aaaaaaaaaaaaaaaaaaaaaaaa".to_owned();
            a.connected(&alice).await.unwrap().expect("online");
            // Redis restarted empty.
            testing::delete_prefix(&cluster).await;
            assert!(!a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online);
            let changes = a.sweep().await.unwrap();
            assert_eq!(changes, vec![PresenceState::online(&alice, None)]);
            assert!(a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online);
            assert!(a.sweep().await.unwrap().is_empty(), "nothing more to report");
            // Counts stay right after the rewrite.
            a.connected(&alice).await.unwrap();
            assert_eq!(a.disconnected(&alice).await.unwrap(), None);
            assert!(a.disconnected(&alice).await.unwrap().is_some_and(|s| !s.online));
            testing::delete_prefix(&cluster).await;
        }
    }
}
