//! The `[chat]` section.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Longest message body, in characters (Unicode scalar values).
    pub max_message_chars: usize,
    /// History page size when the client gives no `limit`.
    pub page_default: usize,
    /// Largest `limit` a history request may ask for.
    pub page_max: usize,
    /// `sync` batch size when the client gives no `limit`.
    pub sync_default: usize,
    /// Largest `limit` a `sync` may ask for.
    pub sync_max: usize,
    /// Conversations listed when the client gives no `limit` (the old clients, which
    /// page nothing, see this many newest conversations).
    pub conversations_default: usize,
    /// Largest `limit` a conversation list may ask for.
    pub conversations_max: usize,
    /// Longest `clientMsgId`, in characters.
    pub max_client_msg_id_len: usize,
    /// Relay `typing` events; when false the event is not registered at all.
    pub typing_enabled: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_message_chars: 4000,
            page_default: 50,
            page_max: 200,
            sync_default: 100,
            sync_max: 500,
            conversations_default: 200,
            conversations_max: 1000,
            max_client_msg_id_len: 64,
            typing_enabled: true,
        }
    }
}

fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// `<name>_max` within 1..=10000 and `<name>_default` within 1..=`<name>_max`.
fn page_bounds(p: &mut Vec<ConfigProblem>, name: &str, default: usize, max: usize) {
    if !(1..=10_000).contains(&max) {
        p.push(problem(&format!("{name}_max"), "expected 1 to 10000"));
    }
    if default == 0 || default > max {
        p.push(problem(
            &format!("{name}_default"),
            format!("expected 1 to {name}_max ({max})"),
        ));
    }
}

impl Section for ChatConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        // Upper bounds keep one answer (a page, a sync batch) within sane packet sizes.
        if !(1..=1_000_000).contains(&self.max_message_chars) {
            p.push(problem("max_message_chars", "expected 1 to 1000000 characters"));
        }
        page_bounds(&mut p, "page", self.page_default, self.page_max);
        page_bounds(&mut p, "sync", self.sync_default, self.sync_max);
        page_bounds(
            &mut p,
            "conversations",
            self.conversations_default,
            self.conversations_max,
        );
        if !(1..=1024).contains(&self.max_client_msg_id_len) {
            p.push(problem("max_client_msg_id_len", "expected 1 to 1024 characters"));
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
    fn defaults_are_valid_and_unknown_keys_are_refused() {
        let c: ChatConfig = parse_section("chat", &json!({}), &dev()).unwrap();
        assert_eq!(
            (c.max_message_chars, c.page_default, c.page_max, c.sync_max),
            (4000, 50, 200, 500)
        );
        let p = parse_section::<ChatConfig>("chat", &json!({"page_size": 3}), &dev()).unwrap_err();
        assert_eq!(p[0].key, "chat.page_size");
    }

    #[test]
    fn ranges_are_checked_by_key() {
        let given = json!({"page_default": 300, "sync_max": 0, "conversations_max": 20_000});
        let p = parse_section::<ChatConfig>("chat", &given, &dev()).unwrap_err();
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "chat.page_default",
                "chat.sync_max",
                "chat.sync_default",
                "chat.conversations_max"
            ]
        );
        assert!(p[0].message.contains("page_max (200)"), "{}", p[0].message);
    }
}
