//! The API documents. The kernel assembles one OpenAPI document from the enabled plugins'
//! fragments and shares it as [`ApiDocument`]; the docs plugin derives the AsyncAPI
//! document of the Socket.IO events from it, so the socket events are described once.
//!
//! # Socket events in a fragment
//!
//! A plugin describes its events under the [`SOCKET_EVENTS`] extension of its fragment: an
//! object from event name to a [`SocketEvent`]. JSON Schemas in it may `$ref`
//! `#/components/schemas/<Name>`; the fragment must then carry those schemas.
//!
//! ```json
//! "x-socket-events": {
//!   "send_message": {
//!     "direction": "client-to-server",
//!     "summary": "Send a message",
//!     "payload": {"$ref": "#/components/schemas/SendMessageRequest"},
//!     "ack": {"success": {"$ref": "..."}, "failure": {"$ref": "..."}},
//!     "emits": [{"event": "message_sent", "to": "every socket of the sender", "payload": {"$ref": "..."}}],
//!     "errors": ["validation_failed", "unauthorized"]
//!   },
//!   "message_sent": {"direction": "server-to-client", "payload": {"$ref": "..."}}
//! }
//! ```
//!
//! A plugin with socket connect middleware describes what the handshake accepts under
//! [`SOCKET_HANDSHAKE`] (a [`SocketHandshake`]). The docs plugin may set the documents'
//! title under [`DOCUMENT_INFO`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::OpenApi;

/// The fragment extension listing socket events (see the module documentation).
pub const SOCKET_EVENTS: &str = "x-socket-events";
/// The fragment extension describing the Socket.IO handshake.
pub const SOCKET_HANDSHAKE: &str = "x-socket-handshake";
/// The fragment extension that replaces the document's `title` and `description`.
pub const DOCUMENT_INFO: &str = "x-document-info";

#[derive(Clone, Default)]
pub struct ApiDocument(Arc<OnceLock<OpenApi>>);

impl ApiDocument {
    /// The finished document; `None` only while plugins are still being built.
    pub fn get(&self) -> Option<&OpenApi> {
        self.0.get()
    }
    /// Called once by the kernel after every plugin is built.
    pub fn set(&self, doc: OpenApi) {
        let _ = self.0.set(doc);
    }
}

/// Which way a socket event travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    /// The same event name is sent by clients and emitted by the server; the emitted
    /// payload is the one in `emits` when it differs.
    Both,
}

impl Direction {
    pub fn from_client(self) -> bool {
        self != Direction::ServerToClient
    }
    pub fn to_client(self) -> bool {
        self != Direction::ClientToServer
    }
}

/// One socket event under [`SOCKET_EVENTS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketEvent {
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of the payload; `None` for an event without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// What the ack callback receives, for events a client may ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckSchemas>,
    /// What the server emits as a result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emits: Vec<Emission>,
    /// The error codes the event can fail with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Anything else (`idempotency`, `errorsWithoutAck`, ...): carried over as `x-` fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AckSchemas {
    pub success: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Value>,
}

/// An event the server emits because of a client's event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Emission {
    pub event: String,
    /// Who receives it, in words ("every socket of the receiver").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// What the Socket.IO handshake accepts, under [`SOCKET_HANDSHAKE`]. The kernel merges the
/// plugins' entries: `auth` properties are united, `security` and descriptions appended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketHandshake {
    /// The JSON Schema of the handshake's `auth` object (`io(url, {auth: {...}})`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Value>,
    /// Names of `components.securitySchemes` the handshake accepts (any one suffices);
    /// empty: every scheme of the document, since the kernel hands the handshake's headers
    /// to the same authenticator as HTTP requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Renders any document as YAML (`/swagger.yaml`, `confab openapi --yaml`).
pub fn to_yaml<T: Serialize + ?Sized>(doc: &T) -> Result<String, String> {
    serde_norway::to_string(doc).map_err(|e| format!("cannot render YAML: {e}"))
}

/// The socket events of an assembled document, by name (sorted), typed.
pub fn socket_events(doc: &Value) -> Result<BTreeMap<String, SocketEvent>, String> {
    let Some(events) = doc.get(SOCKET_EVENTS) else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(events) = events else {
        return Err(format!("{SOCKET_EVENTS} must be an object"));
    };
    events
        .iter()
        .map(|(name, v)| {
            serde_json::from_value::<SocketEvent>(v.clone())
                .map(|e| (name.clone(), e))
                .map_err(|e| format!("{SOCKET_EVENTS}.{name}: {e}"))
        })
        .collect()
}

/// Where the component schemas live; a `$ref` to one is this and its name.
pub const SCHEMA_REF: &str = "#/components/schemas/";

/// The names of the component schemas `v` refers to, anywhere inside it.
pub fn schema_refs(v: &Value, out: &mut impl Extend<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(SCHEMA_REF))
            {
                out.extend(std::iter::once(name.to_owned()));
            }
            m.values().for_each(|v| schema_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| schema_refs(v, out)),
        _ => {}
    }
}

/// The AsyncAPI form of an assembled OpenAPI document, provided by the docs plugin (which
/// owns the conversion) for `confab asyncapi`.
#[derive(Clone)]
pub struct AsyncApiRenderer(pub Arc<RenderFn>);

/// Renders one document from another (or says why it cannot).
pub type RenderFn = dyn Fn(&OpenApi) -> Result<Value, String> + Send + Sync;

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn yaml_renders_the_same_data() {
        let v = json!({"a": "yes", "b": ["1", 1, null], "c": "two\nlines", "d": {"e": true}});
        let y = to_yaml(&v).unwrap();
        let back: Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(back, v);
    }
}

/// Builders the plugins' OpenAPI fragments share.
pub mod build {
    use serde_json::{Value, json};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};

    /// A `$ref` to `#/components/schemas/<name>`.
    pub fn schema_ref(name: &str) -> RefOr<Schema> {
        RefOr::Ref(Ref::from_schema_name(name))
    }

    /// The same `$ref` as plain JSON, for `x-socket-events` payloads.
    pub fn json_ref(name: &str) -> Value {
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// A response with an `application/json` body of `schema`.
    pub fn json_response(description: &str, schema: RefOr<Schema>) -> Response {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
            .build()
    }

    /// An error response (`{message, code}`).
    pub fn error(description: &str) -> Response {
        json_response(description, schema_ref("Error"))
    }
}
