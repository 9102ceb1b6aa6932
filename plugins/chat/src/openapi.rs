//! The chat plugin's OpenAPI fragment: the REST paths, the schemas (derived from the Rust
//! types the handlers use), and every socket event under the `x-socket-events` extension.

use confab_sdk::ApiError;
use confab_sdk::docs::build::{error, json_ref, json_response, schema_ref};
use confab_sdk::storage::{Conversation, Message, ReadState};
use serde_json::{Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr, Required, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use crate::config::ChatConfig;
use crate::input::{FetchHistoryRequest, MarkReadRequest, SendMessageRequest, SyncRequest, TypingRequest};
use crate::service::{MessagesRead, SyncResult, TypingEvent};

// Schema-only types: they describe ack shapes the handlers build without copying the
// already-serialized message JSON, so they are never constructed.

/// The ack of a successful `send_message`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct SendMessageAck {
    #[schema(example = true)]
    ok: bool,
    message: Message,
}

/// The ack of a successful `fetch_history` (the same list is emitted as `chat_history`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct FetchHistoryAck {
    #[schema(example = true)]
    ok: bool,
    /// Oldest first.
    messages: Vec<Message>,
}

/// The ack of a failed event (clients without an ack get an `error` event instead).
#[derive(ToSchema)]
#[allow(dead_code)]
struct AckError {
    #[schema(example = false)]
    ok: bool,
    error: ApiError,
}

/// The ack of `typing`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct OkAck {
    #[schema(example = true)]
    ok: bool,
}

fn string_param(name: &str, place: ParameterIn, description: &str) -> ParameterBuilder {
    let required = if place == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(required)
        .description(Some(description))
        .schema(Some(String::schema()))
}

fn body(name: &str) -> Option<utoipa::openapi::request_body::RequestBody> {
    Some(
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema_ref(name))).build(),
            )
            .build(),
    )
}

/// An operation on `/chats/{userId}/...`: tagged, secured, with the common errors.
fn operation(id: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .tag("chat")
        // Either credential works: two requirements are alternatives.
        .security(SecurityRequirement::new("bearerAuth", Vec::<String>::new()))
        .security(SecurityRequirement::new("cookieAuth", Vec::<String>::new()))
        .parameter(string_param(
            "userId",
            ParameterIn::Path,
            "The authenticated user's id (else 403).",
        ))
        .response("401", error("Not authenticated"))
        .response("403", error("`userId` is not the authenticated user"))
}

fn array_of(name: &str) -> RefOr<Schema> {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(schema_ref(name))
        .build()
        .into()
}

/// The optional `limit` query parameter of a paged route.
fn limit_param(max: usize, default: usize) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("limit")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(format!("Page size, 1 to {max} (default {default}).")))
        .schema(Some(u32::schema()))
        .build()
}

fn paths(config: &ChatConfig) -> PathsBuilder {
    let history = operation(
        "chatHistory",
        "A page of the conversation with another user, oldest first",
    )
    .description(Some(format!(
        "Without cursors: the newest `limit` messages. `before`/`after` are message ids of this \
             conversation; an unknown one is a 400 naming the parameter. `limit` defaults to {} and \
             may be at most {}.",
        config.page_default, config.page_max
    )))
    .parameter(string_param("withUser", ParameterIn::Path, "The other user's id."))
    .parameter(string_param(
        "before",
        ParameterIn::Query,
        "Only messages older than this message id.",
    ))
    .parameter(string_param(
        "after",
        ParameterIn::Query,
        "Only messages newer than this message id.",
    ))
    .parameter(limit_param(config.page_max, config.page_default))
    .response("200", json_response("The messages, oldest first", array_of("Message")))
    .response(
        "400",
        error("A malformed id, an unknown cursor or a limit out of range"),
    );
    let send = operation("chatSend", "Send a message")
        .description(Some(format!(
            "Stored before the answer (201), then delivered: `receive_message` to every socket of the \
             receiver, `message_sent` to every socket of the sender. A repeat of the same `clientMsgId` \
             answers 200 with the stored message and is not delivered again; the same `clientMsgId` with \
             another receiver or text is refused with 409. At most {} characters.",
            config.max_message_chars
        )))
        .request_body(body("SendMessageRequest"))
        .response("201", json_response("Stored", schema_ref("Message")))
        .response(
            "200",
            json_response(
                "An idempotent repeat: the message stored earlier",
                schema_ref("Message"),
            ),
        )
        .response("400", error("A field is missing, has the wrong type or is invalid"))
        .response("404", error("The receiver does not exist"))
        .response(
            "409",
            error("This `clientMsgId` was already used by the sender for another receiver or text"),
        )
        .response(
            "413",
            error("The message is longer than allowed, or the body exceeds the body limit"),
        )
        .response("429", error("Rate limited (when the ratelimit plugin is enabled)"))
        .response("503", error("Storage is busy or shutting down; retry"));
    let conversations = operation("chatConversations", "My conversations, newest first")
        .description(Some(format!(
            "Ordered by each conversation's newest message. At most `limit` entries (default {}, at \
             most {}); the header `X-Has-More` says whether more follow, and the next page is \
             `before` = the `lastMessage._id` of the last entry.",
            config.conversations_default, config.conversations_max
        )))
        .parameter(string_param(
            "before",
            ParameterIn::Query,
            "Only conversations whose newest message is older than this message id (one to or from me).",
        ))
        .parameter(limit_param(config.conversations_max, config.conversations_default))
        .response(
            "200",
            json_response("One entry per partner, with the unread count", array_of("Conversation")),
        )
        .response("400", error("A malformed or foreign `before`, or a limit out of range"));
    let read = operation("chatMarkRead", "Mark a conversation read up to a message")
        .description(Some(
            "Moves my read cursor forward (never back) and emits `messages_read` to both users' sockets.",
        ))
        .request_body(body("MarkReadRequest"))
        .response("200", json_response("The read state", schema_ref("ReadState")))
        .response(
            "400",
            error("A malformed id, or `upTo` is not a message of this conversation"),
        );
    PathsBuilder::new()
        .path(
            "/chats/{userId}/with/{withUser}",
            PathItem::new(HttpMethod::Get, history),
        )
        .path("/chats/{userId}/send", PathItem::new(HttpMethod::Post, send))
        .path(
            "/chats/{userId}/conversations",
            PathItem::new(HttpMethod::Get, conversations),
        )
        .path("/chats/{userId}/read", PathItem::new(HttpMethod::Post, read))
}

fn add<T: ToSchema>(components: ComponentsBuilder) -> ComponentsBuilder {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    components.schema(T::name(), T::schema()).schemas_from_iter(nested)
}

/// Sets the `maxLength` of `field` in the object schema `schema` (the configured limits
/// are not known to the derive).
fn set_max_length(schema: &mut RefOr<Schema>, field: &str, max: usize) {
    if let RefOr::T(Schema::Object(o)) = schema
        && let Some(RefOr::T(Schema::Object(f))) = o.properties.get_mut(field)
    {
        f.max_length = Some(max);
    }
}

fn components(config: &ChatConfig) -> ComponentsBuilder {
    let mut send = SendMessageRequest::schema();
    set_max_length(&mut send, "message", config.max_message_chars);
    set_max_length(&mut send, "clientMsgId", config.max_client_msg_id_len);
    let mut c = ComponentsBuilder::new().schema(SendMessageRequest::name(), send);
    c = add::<Message>(c);
    c = add::<Conversation>(c);
    c = add::<ReadState>(c);
    c = add::<ApiError>(c);
    c = add::<FetchHistoryRequest>(c);
    c = add::<TypingRequest>(c);
    c = add::<MarkReadRequest>(c);
    c = add::<SyncRequest>(c);
    c = add::<SendMessageAck>(c);
    c = add::<FetchHistoryAck>(c);
    c = add::<AckError>(c);
    c = add::<OkAck>(c);
    c = add::<SyncResult>(c);
    c = add::<MessagesRead>(c);
    c = add::<TypingEvent>(c);
    c
}

/// Every socket event, client-to-server ones with their ack and what they emit.
fn socket_events(config: &ChatConfig) -> Value {
    let failure = json_ref("AckError");
    let without_ack = "without an ack callback, errors arrive as an `error` event {message, code}";
    let mut events = json!({
        "send_message": {
            "direction": "client-to-server",
            "summary": "Send a message. Stored before anything is acked or emitted; per sender and receiver, \
                        stored and delivered in send order.",
            "payload": json_ref("SendMessageRequest"),
            "ack": {"success": json_ref("SendMessageAck"), "failure": failure},
            "emits": [
                {"event": "message_sent", "to": "every socket of the sender", "payload": json_ref("Message")},
                {"event": "receive_message", "to": "every socket of the receiver (not for a message to oneself)",
                 "payload": json_ref("Message")},
            ],
            "idempotency": "a repeat of (sender, clientMsgId) acks the stored message and emits nothing new; \
                            without an ack, `message_sent` is emitted again to the sending socket only; \
                            the same clientMsgId with another receiver or text fails with `conflict`",
            "errors": ["unauthorized", "validation_failed", "payload_too_large", "not_found", "conflict", "unavailable", "internal"],
            "errorsWithoutAck": without_ack,
        },
        "fetch_history": {
            "direction": "client-to-server",
            "summary": format!("A page of the conversation with `withUser`, oldest first (limit {} by default, at most {}).",
                               config.page_default, config.page_max),
            "payload": json_ref("FetchHistoryRequest"),
            "ack": {"success": json_ref("FetchHistoryAck"), "failure": failure},
            "emits": [{"event": "chat_history", "to": "the requesting socket", "payload": {"type": "array", "items": json_ref("Message")}}],
            "errors": ["unauthorized", "validation_failed", "unavailable", "internal"],
            "errorsWithoutAck": without_ack,
        },
        "mark_read": {
            "direction": "client-to-server",
            "summary": "Move my read cursor for `withUser` forward to `upTo` (default: the newest message).",
            "payload": json_ref("MarkReadRequest"),
            "ack": {"success": {"allOf": [json_ref("ReadState"), json_ref("OkAck")]}, "failure": failure},
            "emits": [{"event": "messages_read", "to": "every socket of both users", "payload": json_ref("MessagesRead")}],
            "errors": ["unauthorized", "validation_failed", "unavailable", "internal"],
            "errorsWithoutAck": without_ack,
        },
        "sync": {
            "direction": "client-to-server",
            "summary": format!("My stream after `afterPos` (or, for old clients, after the message `after`), oldest first \
                                (limit {} by default, at most {}; 0 answers only `headPos`); repeat from the last `pos` while \
                                `hasMore`, then set your last position to `headPos`. Client rule: apply `pos == last + 1`, \
                                ignore smaller, sync on a larger one and after every reconnect. Requires an ack.",
                               config.sync_default, config.sync_max),
            "payload": json_ref("SyncRequest"),
            "ack": {"success": json_ref("SyncResult"), "failure": failure},
            "emits": [],
            "errors": ["unauthorized", "validation_failed", "unavailable", "internal"],
            "errorsWithoutAck": "sync without an ack callback is refused with an `error` event (field `ack`)",
        },
        "receive_message": {"direction": "server-to-client", "summary": "A new message for me; `pos` is its position in my stream. \
            A socket that cannot take it (its buffer is full) is closed instead: reconnect and sync.", "payload": json_ref("Message")},
        "message_sent": {"direction": "server-to-client", "summary": "A message I sent (from any of my sockets or REST) is stored.",
                         "payload": json_ref("Message")},
        "chat_history": {"direction": "server-to-client", "summary": "The answer to `fetch_history`.",
                         "payload": {"type": "array", "items": json_ref("Message")}},
        "messages_read": {"direction": "server-to-client", "summary": "`by` read `withUser`'s messages up to `upTo`.",
                          "payload": json_ref("MessagesRead")},
        "error": {"direction": "server-to-client", "summary": "A failed event of a client that passed no ack callback.",
                  "payload": json_ref("Error")},
    });
    if config.typing_enabled {
        events["typing"] = json!({
            "direction": "both",
            "summary": "Client to server: tell `to` whether I am typing (not stored). Server to client: `from` is typing.",
            "payload": json_ref("TypingRequest"),
            "ack": {"success": json_ref("OkAck"), "failure": failure},
            "emits": [{"event": "typing", "to": "every socket of `to`", "payload": json_ref("TypingEvent")}],
            "errors": ["unauthorized", "validation_failed"],
            "errorsWithoutAck": without_ack,
        });
    }
    events
}

pub(crate) fn fragment(config: &ChatConfig) -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .paths(paths(config))
        .components(Some(components(config).build()))
        .build();
    doc.extensions = Some(Extensions::from_iter([("x-socket-events", socket_events(config))]));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_schema_states_the_configured_lengths() {
        let config = ChatConfig {
            max_message_chars: 120,
            max_client_msg_id_len: 16,
            ..ChatConfig::default()
        };
        let doc = serde_json::to_value(fragment(&config)).unwrap();
        let props = &doc["components"]["schemas"]["SendMessageRequest"]["properties"];
        assert_eq!(props["message"]["maxLength"], 120, "{props}");
        assert_eq!(props["clientMsgId"]["maxLength"], 16, "{props}");
    }

    #[test]
    fn the_fragment_has_every_path_schema_and_event() {
        let doc = serde_json::to_value(fragment(&ChatConfig::default())).unwrap();
        for p in [
            "/chats/{userId}/with/{withUser}",
            "/chats/{userId}/send",
            "/chats/{userId}/conversations",
            "/chats/{userId}/read",
        ] {
            assert!(doc["paths"][p].is_object(), "missing {p}");
        }
        assert_eq!(
            doc["paths"]["/chats/{userId}/send"]["post"]["security"][0],
            json!({"bearerAuth": []})
        );
        let schemas = &doc["components"]["schemas"];
        for s in [
            "Message",
            "Conversation",
            "ReadState",
            "Error",
            "SendMessageRequest",
            "SyncResult",
            "MessagesRead",
            "TypingEvent",
        ] {
            assert!(schemas[s].is_object(), "missing schema {s}");
        }
        assert!(schemas["Message"]["properties"]["_id"].is_object());
        let events = &doc["x-socket-events"];
        for e in [
            "send_message",
            "fetch_history",
            "typing",
            "mark_read",
            "sync",
            "receive_message",
            "message_sent",
            "chat_history",
            "messages_read",
            "error",
        ] {
            assert!(events[e]["direction"].is_string(), "missing event {e}");
        }
        // Every $ref points at a schema of the fragment.
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas[name].is_object(), "dangling ref {name}");
        }
        let without_typing = serde_json::to_value(fragment(&ChatConfig {
            typing_enabled: false,
            ..ChatConfig::default()
        }))
        .unwrap();
        assert!(without_typing["x-socket-events"]["typing"].is_null());
    }
}
