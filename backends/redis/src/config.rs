//! `[cluster.redis]`: where Redis is and how long to wait for it.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use serde::{Deserialize, Serialize};

/// Settings of the Redis cluster backend (`REDIS_URL` sets `url` and selects this backend). See `docs/cluster.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`; RESP3 is always used.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each). When any are given the
    /// backend runs in cluster mode and `url` is not used.
    pub cluster_urls: Vec<String>,
    /// Prepended to every key and pub/sub channel, so several clusters can share a Redis.
    pub key_prefix: String,
    /// A node's presence entries expire this long after its last heartbeat (it beats every
    /// third of it): how long the users of a node that died stay online.
    pub heartbeat_ttl_secs: u64,
    /// Bound on one Redis command; a slower answer counts as Redis being unavailable.
    pub command_timeout_ms: u64,
    /// Bound on connecting, at boot and when reconnecting.
    pub connect_timeout_ms: u64,
    /// While Redis is unavailable, accept tokens whose revocation cannot be checked
    /// (revocations made on this node are still enforced). `false` refuses them with 503.
    pub revocations_fail_open: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster_urls: Vec::new(),
            key_prefix: "confab:".into(),
            heartbeat_ttl_secs: 30,
            command_timeout_ms: 1000,
            connect_timeout_ms: 2000,
            revocations_fail_open: true,
        }
    }
}

impl Section for RedisConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(self.url.as_str()) {
            p.push(ConfigProblem::new("url", format!("expected a redis:// URL: {e}")));
        }
        for (i, url) in self.cluster_urls.iter().enumerate() {
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                p.push(ConfigProblem::new(
                    format!("cluster_urls[{i}]"),
                    format!("expected a redis:// URL: {e}"),
                ));
            }
        }
        // `#` separates the parts of the adapter's channel names; braces would change which
        // part of a key a Redis Cluster hashes (the presence keys share the `{presence}` tag).
        let odd = |c: char| c.is_whitespace() || matches!(c, '#' | '{' | '}');
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 || self.key_prefix.chars().any(odd) {
            p.push(ConfigProblem::new(
                "key_prefix",
                "expected 1 to 64 characters without spaces, '#', '{' or '}'",
            ));
        }
        if !(1..=3600).contains(&self.heartbeat_ttl_secs) {
            p.push(ConfigProblem::new("heartbeat_ttl_secs", "expected 1 to 3600 seconds"));
        }
        if !(10..=60_000).contains(&self.command_timeout_ms) {
            p.push(ConfigProblem::new(
                "command_timeout_ms",
                "expected 10 to 60000 milliseconds",
            ));
        }
        if !(10..=60_000).contains(&self.connect_timeout_ms) {
            p.push(ConfigProblem::new(
                "connect_timeout_ms",
                "expected 10 to 60000 milliseconds",
            ));
        }
        p
    }
}
