//! What clients send (socket payloads and REST bodies share these types, and the OpenAPI
//! schemas are derived from them), and the checks serde cannot express.
//!
//! Unknown fields are ignored on purpose: clients of the old backend send extra fields
//! (e.g. `senderId`, which is never trusted: the sender is the authenticated user).

use confab_sdk::ApiError;
use confab_sdk::error::ErrorCode;
use confab_sdk::ids::is_id;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::config::ChatConfig;

/// `send_message` / `POST /chats/{userId}/send`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    /// The receiver's user id (24 hex digits).
    #[schema(example = "665f1c2ab4d3e1f0a9c8b7a6", pattern = "^[0-9a-fA-F]{24}$")]
    pub receiver_id: String,
    /// The text; must not be blank. Stored as given (not trimmed). At most
    /// `chat.max_message_chars` characters (the document states the configured number).
    #[schema(min_length = 1, pattern = "\\S")]
    pub message: String,
    /// Optional client-chosen id: a retry with the same id returns the stored message and
    /// is not delivered again; the same id with another receiver or text is a 409. At most
    /// `chat.max_client_msg_id_len` characters (the document states the configured number).
    #[serde(default)]
    #[schema(min_length = 1)]
    pub client_msg_id: Option<String>,
}

/// `fetch_history`: one page of the conversation with `withUser`, oldest first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FetchHistoryRequest {
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub with_user: String,
    /// Only messages older than this message id.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub before: Option<String>,
    /// Only messages newer than this message id.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub after: Option<String>,
    /// Page size (default `page_default`, at most `page_max`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

/// `typing`: tell `to` whether I am typing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingRequest {
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub to: String,
    pub is_typing: bool,
}

/// `mark_read` / `POST /chats/{userId}/read`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkReadRequest {
    /// The partner whose messages I read.
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub with_user: String,
    /// The newest message read (default: the newest of the conversation).
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub up_to: Option<String>,
}

/// `sync`: my stream after a position (or, as the old clients do, after a message).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    /// The highest contiguous stream position the client holds (0: from the beginning).
    /// Wins over `after` when both are given. Beyond the head it answers no messages and
    /// the true `headPos`: a client whose last position is above it starts over from 0.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub after_pos: Option<u64>,
    /// The last message id the client has; absent or null: from the beginning.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub after: Option<String>,
    /// Batch size (default `sync_default`, at most `sync_max`); 0 answers only `headPos`.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 500)]
    pub limit: Option<u64>,
}

/// A user or message id: 24 hex digits, normalized to lower case (in place, no allocation).
pub fn id(field: &str, mut value: String) -> Result<String, ApiError> {
    if !is_id(&value) {
        return Err(ApiError::validation(field, "must be a 24-hex-digit id"));
    }
    value.make_ascii_lowercase();
    Ok(value)
}

pub fn opt_id(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    value.map(|v| id(field, v)).transpose()
}

/// A page size: the default when absent, else 1..=max.
pub fn limit(field: &str, value: Option<u64>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n <= max as u64 => Ok(n as usize),
        Some(_) => Err(ApiError::validation(field, format!("must be between 1 and {max}"))),
    }
}

/// A `limit` query parameter (REST), parsed with the same rules.
pub fn limit_param(raw: Option<String>, default: usize, max: usize) -> Result<usize, ApiError> {
    let value = match raw.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::validation("limit", format!("must be an integer between 1 and {max}")))?,
        ),
    };
    limit("limit", value, default, max)
}

/// Checks a send request and turns it into the store's input.
pub fn new_message(
    sender: String,
    req: SendMessageRequest,
    config: &ChatConfig,
) -> Result<confab_sdk::storage::NewMessage, ApiError> {
    let receiver_id = id("receiverId", req.receiver_id)?;
    let message = req.message;
    if message.trim().is_empty() {
        return Err(ApiError::validation("message", "must not be empty"));
    }
    // A UTF-8 string never has more characters than bytes: count only when it could be long.
    if message.len() > config.max_message_chars && message.chars().count() > config.max_message_chars {
        let mut e = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("message: must be at most {} characters", config.max_message_chars),
        );
        e.field = Some("message".to_owned());
        return Err(e);
    }
    let client_msg_id = match req.client_msg_id {
        None => None,
        Some(c) if c.is_empty() => {
            return Err(ApiError::validation("clientMsgId", "must not be empty"));
        }
        Some(c) if c.len() > config.max_client_msg_id_len && c.chars().count() > config.max_client_msg_id_len => {
            return Err(ApiError::validation(
                "clientMsgId",
                format!("must be at most {} characters", config.max_client_msg_id_len),
            ));
        }
        Some(c) => Some(c),
    };
    Ok(confab_sdk::storage::NewMessage {
        sender_id: sender,
        receiver_id,
        message,
        client_msg_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_sdk::http::from_value;
    use serde_json::json;

    const A: &str = "665f1c2ab4d3e1f0a9c8b7a6";

    fn send(v: serde_json::Value) -> Result<confab_sdk::storage::NewMessage, ApiError> {
        let c = ChatConfig {
            max_message_chars: 5,
            max_client_msg_id_len: 3,
            ..ChatConfig::default()
        };
        new_message(A.to_owned(), from_value::<SendMessageRequest>(v)?, &c)
    }

    fn field(r: Result<confab_sdk::storage::NewMessage, ApiError>) -> (String, ErrorCode) {
        let e = r.unwrap_err();
        (e.field.unwrap_or_default(), e.code)
    }

    #[test]
    fn send_requests_are_checked_field_by_field() {
        let ok = send(json!({"receiverId": A.to_uppercase(), "message": " hé ", "senderId": "ignored"})).unwrap();
        assert_eq!(ok.receiver_id, A);
        assert_eq!(ok.message, " hé ");
        assert_eq!(ok.sender_id, A);
        use ErrorCode::*;
        assert_eq!(
            field(send(json!({"receiverId": "x", "message": "a"}))),
            ("receiverId".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": 5, "message": "a"}))),
            ("receiverId".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": A}))),
            ("message".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": A, "message": "  \n"}))),
            ("message".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": A, "message": 12}))),
            ("message".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": A, "message": "123456"}))),
            ("message".into(), PayloadTooLarge)
        );
        // Five characters, ten bytes: within the limit.
        assert!(send(json!({"receiverId": A, "message": "ééééé"})).is_ok());
        assert_eq!(
            field(send(json!({"receiverId": A, "message": "a", "clientMsgId": ""}))),
            ("clientMsgId".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": A, "message": "a", "clientMsgId": "abcd"}))),
            ("clientMsgId".into(), ValidationFailed)
        );
        assert_eq!(
            field(send(json!({"receiverId": A, "message": "a", "clientMsgId": 7}))),
            ("clientMsgId".into(), ValidationFailed)
        );
        assert_eq!(field(send(json!("garbage"))), ("payload".into(), ValidationFailed));
        assert_eq!(field(send(json!(null))), ("payload".into(), ValidationFailed));
    }

    #[test]
    fn limits_have_defaults_and_ranges() {
        assert_eq!(limit("limit", None, 50, 200).unwrap(), 50);
        assert_eq!(limit("limit", Some(200), 50, 200).unwrap(), 200);
        assert!(limit("limit", Some(0), 50, 200).is_err());
        assert!(limit("limit", Some(201), 50, 200).is_err());
        assert_eq!(limit_param(Some("7".into()), 50, 200).unwrap(), 7);
        assert_eq!(limit_param(Some("".into()), 50, 200).unwrap(), 50);
        assert_eq!(
            limit_param(Some("x".into()), 50, 200).unwrap_err().field.as_deref(),
            Some("limit")
        );
        assert!(limit_param(Some("-1".into()), 50, 200).is_err());
    }
}
