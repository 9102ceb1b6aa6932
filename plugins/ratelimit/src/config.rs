//! The `[ratelimit]` section: rules (a rate and a burst per key) and quotas (a count per
//! UTC day per key), each applied to routes and socket events named in `targets`.

use std::collections::HashSet;

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use confab_sdk::ratelimit::Rate;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Moved to `server.trusted_proxies` (the kernel resolves the client address for
    /// every plugin); still read so that a config setting it gets a message saying so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// A socket refused this many times the rule's burst in a row is disconnected; 0 never.
    pub disconnect_factor: u32,
    /// Testing aid: moves the clock that decides quota days by this many seconds.
    pub clock_offset_secs: i64,
    pub rules: Vec<RuleConfig>,
    pub quotas: Vec<QuotaConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    // Fields in alphabetical order: `confab config show` prints them in this order and a
    // config file's tables come back sorted, so the two agree.
    /// Requests admitted at once.
    pub burst: u32,
    /// `"ip"`, `"user"` or `"username"` (the `username` field of a JSON body).
    pub key: String,
    /// Unique; names the counter (targets of one rule share it).
    pub name: String,
    /// `"<count>/<s|min|h|day>"`: the sustained rate.
    pub rate: String,
    /// `"route:POST /auth/login"` (method and path as routed) or `"event:send_message"`.
    pub targets: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub key: String,
    pub name: String,
    /// Requests per UTC day.
    pub per_day: u64,
    pub targets: Vec<String>,
}

fn rule(name: &str, targets: &[&str], key: &str, rate: &str, burst: u32) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        key: key.into(),
        rate: rate.into(),
        burst,
    }
}

const LOGIN: &str = "route:POST /auth/login";
const REGISTER: &str = "route:POST /auth/register";
const SEND: &str = "route:POST /chats/{userId}/send";
const READS: &[&str] = &[
    "route:GET /chats/{userId}/with/{withUser}",
    "route:GET /chats/{userId}/conversations",
    "route:GET /auth/me",
    "event:fetch_history",
    "event:sync",
];
const RECEIPTS: &[&str] = &["route:POST /chats/{userId}/read", "event:mark_read"];
const PRESENCE: &[&str] = &[
    "route:GET /users/{id}/presence",
    "event:subscribe_presence",
    "event:unsubscribe_presence",
];

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            trusted_proxies: Vec::new(),
            disconnect_factor: 3,
            clock_offset_secs: 0,
            rules: vec![
                rule("login_ip", &[LOGIN], "ip", "1/s", 60),
                rule("login_username", &[LOGIN], "username", "10/min", 10),
                rule("register_ip", &[REGISTER], "ip", "30/min", 60),
                rule("register_username", &[REGISTER], "username", "10/min", 10),
                rule("refresh_ip", &["route:POST /auth/refresh"], "ip", "1/s", 60),
                rule("send", &[SEND, "event:send_message"], "user", "20/s", 250),
                rule("typing", &["event:typing"], "user", "10/s", 20),
                // Everything else that reads or writes storage or cluster state costs too.
                // A reconnecting client pages through `sync` at 500 messages a page: the
                // burst lets 100 pages (50,000 missed messages) through at once.
                rule("reads", READS, "user", "20/s", 100),
                rule("read_receipts", RECEIPTS, "user", "10/s", 50),
                rule("presence", PRESENCE, "user", "10/s", 50),
            ],
            quotas: vec![QuotaConfig {
                name: "messages_per_day".into(),
                targets: vec![SEND.into(), "event:send_message".into()],
                key: "user".into(),
                per_day: 10_000,
            }],
        }
    }
}

/// What a rule or quota applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Method and path without the leading `/`, as salvo reports the matched route.
    Route {
        method: String,
        path: String,
    },
    Event(String),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some(event) = s.strip_prefix("event:") {
            let event = event.trim();
            if event.is_empty() {
                return Err(format!("{s:?}: expected an event name after `event:`"));
            }
            return Ok(Target::Event(event.to_owned()));
        }
        if let Some(route) = s.strip_prefix("route:") {
            let (method, path) = route
                .trim()
                .split_once(' ')
                .ok_or_else(|| format!("{s:?}: expected `route:<METHOD> /<path>`"))?;
            let path = path.trim();
            if !path.starts_with('/') || method.is_empty() {
                return Err(format!("{s:?}: expected `route:<METHOD> /<path>`"));
            }
            return Ok(Target::Route {
                method: method.to_ascii_uppercase(),
                path: path.trim_start_matches('/').trim_end_matches('/').to_owned(),
            });
        }
        Err(format!("{s:?}: expected `route:<METHOD> /<path>` or `event:<name>`"))
    }
}

/// Who a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Ip,
    User,
    Username,
}

impl KeyKind {
    pub fn parse(s: &str) -> Result<KeyKind, String> {
        match s {
            "ip" => Ok(KeyKind::Ip),
            "user" => Ok(KeyKind::User),
            "username" => Ok(KeyKind::Username),
            _ => Err(format!("expected \"ip\", \"user\" or \"username\", got {s:?}")),
        }
    }
}

fn problem(key: String, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key,
        message: message.into(),
    }
}

/// Checks targets and key of one rule or quota. Sockets know their user only.
fn check_targets(at: &str, targets: &[String], key: &str, p: &mut Vec<ConfigProblem>) {
    let kind = KeyKind::parse(key);
    if let Err(e) = &kind {
        p.push(problem(format!("{at}.key"), e.clone()));
    }
    if targets.is_empty() {
        p.push(problem(format!("{at}.targets"), "expected at least one target"));
    }
    for (i, t) in targets.iter().enumerate() {
        match Target::parse(t) {
            Err(e) => p.push(problem(format!("{at}.targets[{i}]"), e)),
            Ok(Target::Event(_)) if kind.as_ref().is_ok_and(|k| *k != KeyKind::User) => p.push(problem(
                format!("{at}.targets[{i}]"),
                "socket events are limited per user only (key = \"user\")",
            )),
            Ok(_) => {}
        }
    }
}

impl Section for RateLimitConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !self.trusted_proxies.is_empty() {
            p.push(problem(
                "trusted_proxies".into(),
                "moved to server.trusted_proxies: the kernel resolves the client address once, for every plugin and its connection caps",
            ));
        }
        let mut names = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if r.name.trim().is_empty() || !names.insert(r.name.as_str()) {
                p.push(problem(format!("{at}.name"), "expected a unique, non-empty name"));
            }
            if let Err(e) = Rate::parse(&r.rate, r.burst) {
                let field = if r.burst == 0 { "burst" } else { "rate" };
                p.push(problem(format!("{at}.{field}"), e));
            }
            check_targets(&at, &r.targets, &r.key, &mut p);
        }
        for (i, q) in self.quotas.iter().enumerate() {
            let at = format!("quotas[{i}]");
            if q.name.trim().is_empty() || !names.insert(q.name.as_str()) {
                p.push(problem(
                    format!("{at}.name"),
                    "expected a unique, non-empty name (rules and quotas share names)",
                ));
            }
            if q.per_day == 0 {
                p.push(problem(format!("{at}.per_day"), "expected at least 1"));
            }
            check_targets(&at, &q.targets, &q.key, &mut p);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use confab_sdk::config::parse_section;
    use serde_json::json;

    use super::*;

    fn parse(v: serde_json::Value) -> Result<RateLimitConfig, Vec<String>> {
        let profile = RunProfile {
            name: "development".into(),
        };
        parse_section::<RateLimitConfig>("ratelimit", &v, &profile)
            .map_err(|p| p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect())
    }

    #[test]
    fn defaults_are_valid_and_problems_are_named_by_key() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c.rules.len(), 10);
        let bad = parse(json!({
            "trusted_proxies": ["10.0.0.0/8"],
            "rules": [
                {"name": "a", "targets": ["event:typing"], "key": "ip", "rate": "1/s", "burst": 1},
                {"name": "a", "targets": ["GET /x"], "key": "user", "rate": "1/week", "burst": 1},
            ],
            "quotas": [{"name": "q", "targets": [], "key": "who", "per_day": 0}],
        }))
        .unwrap_err();
        let keys: Vec<&str> = bad.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "ratelimit.trusted_proxies",
                "ratelimit.rules[0].targets[0]",
                "ratelimit.rules[1].name",
                "ratelimit.rules[1].rate",
                "ratelimit.rules[1].targets[0]",
                "ratelimit.quotas[0].per_day",
                "ratelimit.quotas[0].key",
                "ratelimit.quotas[0].targets",
            ],
            "{bad:#?}"
        );
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("route:post /chats/{userId}/send").unwrap(),
            Target::Route {
                method: "POST".into(),
                path: "chats/{userId}/send".into()
            }
        );
        assert_eq!(Target::parse("event:typing").unwrap(), Target::Event("typing".into()));
        assert!(Target::parse("route:/x").is_err());
    }
}
