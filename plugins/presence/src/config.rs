//! The `[presence]` section.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Most user ids one `subscribe_presence` (or `unsubscribe_presence`) may name.
    pub max_ids_per_request: usize,
    /// Most users one socket may watch at once; further subscriptions are refused.
    pub max_subscriptions_per_socket: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            max_ids_per_request: 100,
            max_subscriptions_per_socket: 1000,
        }
    }
}

fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Section for PresenceConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        // One request reads every named state: keep it within one reasonable round trip.
        if !(1..=1000).contains(&self.max_ids_per_request) {
            p.push(problem("max_ids_per_request", "expected 1 to 1000"));
        }
        if !(1..=100_000).contains(&self.max_subscriptions_per_socket) {
            p.push(problem("max_subscriptions_per_socket", "expected 1 to 100000"));
        } else if self.max_subscriptions_per_socket < self.max_ids_per_request {
            p.push(problem(
                "max_subscriptions_per_socket",
                format!("expected at least max_ids_per_request ({})", self.max_ids_per_request),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_sdk::config::parse_section;
    use serde_json::json;

    fn dev() -> RunProfile {
        RunProfile {
            name: "development".into(),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_keys_are_named() {
        let c: PresenceConfig = parse_section("presence", &json!({}), &dev()).unwrap();
        assert_eq!((c.max_ids_per_request, c.max_subscriptions_per_socket), (100, 1000));
        let p = parse_section::<PresenceConfig>("presence", &json!({"max_ids": 3}), &dev()).unwrap_err();
        assert_eq!(p[0].key, "presence.max_ids");
        let p = parse_section::<PresenceConfig>(
            "presence",
            &json!({"max_ids_per_request": 0, "max_subscriptions_per_socket": 0}),
            &dev(),
        )
        .unwrap_err();
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["presence.max_ids_per_request", "presence.max_subscriptions_per_socket"]
        );
    }
}
