//! The presence plugin's OpenAPI fragment: the REST path, the schemas (derived from the
//! Rust types the handlers use) and the socket events under `x-socket-events`.

use confab_sdk::ApiError;
use confab_sdk::cluster::PresenceState;
use confab_sdk::docs::build::{json_ref, json_response, schema_ref};
use serde_json::{Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ComponentsBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required};
use utoipa::{PartialSchema, ToSchema};

use crate::config::PresenceConfig;
use crate::input::SubscribePresenceRequest;

// Schema-only types: the handlers build these acks as JSON directly.

/// The ack of a successful `subscribe_presence`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct SubscribePresenceAck {
    #[schema(example = true)]
    ok: bool,
    /// The current state of every requested user, in the order asked.
    states: Vec<PresenceState>,
}

/// The ack of a successful `unsubscribe_presence`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UnsubscribePresenceAck {
    #[schema(example = true)]
    ok: bool,
}

/// The ack of a failed presence event (clients without an ack get an `error` event instead).
#[derive(ToSchema)]
#[allow(dead_code)]
struct PresenceAckError {
    #[schema(example = false)]
    ok: bool,
    error: ApiError,
}

fn paths() -> PathsBuilder {
    let get = OperationBuilder::new()
        .operation_id(Some("presenceGet"))
        .summary(Some("Whether a user is online, and when they were last seen"))
        .description(Some(
            "Online while at least one socket of the user is connected to any node. `lastSeen` is set \
             when the user's last socket closes (or when the node holding it stops answering).",
        ))
        .tag("presence")
        .security(SecurityRequirement::new("bearerAuth", Vec::<String>::new()))
        .security(SecurityRequirement::new("cookieAuth", Vec::<String>::new()))
        .parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The user's id (24 hex digits)."))
                .schema(Some(String::schema())),
        )
        .response("200", json_response("The user's presence", schema_ref("Presence")))
        .response("401", json_response("Not authenticated", schema_ref("Error")))
        .response("404", json_response("No such user", schema_ref("Error")))
        .response(
            "503",
            json_response("The cluster state is unavailable; retry", schema_ref("Error")),
        );
    PathsBuilder::new().path("/users/{id}/presence", PathItem::new(HttpMethod::Get, get))
}

fn add<T: ToSchema>(components: ComponentsBuilder) -> ComponentsBuilder {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    components.schema(T::name(), T::schema()).schemas_from_iter(nested)
}

fn components() -> ComponentsBuilder {
    let mut c = ComponentsBuilder::new();
    c = add::<PresenceState>(c);
    c = add::<ApiError>(c);
    c = add::<SubscribePresenceRequest>(c);
    c = add::<SubscribePresenceAck>(c);
    c = add::<UnsubscribePresenceAck>(c);
    c = add::<PresenceAckError>(c);
    c
}

fn socket_events(config: &PresenceConfig) -> Value {
    let failure = json_ref("PresenceAckError");
    json!({
        "subscribe_presence": {
            "direction": "client-to-server",
            "summary": format!(
                "Watch users' presence: the ack carries their current states, then `presence` events \
                 follow on every change. At most {} ids per request and {} watched users per socket; \
                 subscriptions add up and end with the socket.",
                config.max_ids_per_request, config.max_subscriptions_per_socket),
            "payload": json_ref("SubscribePresenceRequest"),
            "ack": {"success": json_ref("SubscribePresenceAck"), "failure": failure},
            "emits": [
                {"event": "presence", "to": "the subscribed socket, on every change of a watched user",
                 "payload": json_ref("Presence")},
            ],
            "errors": ["unauthorized", "validation_failed", "unavailable"],
            "errorsWithoutAck": "without an ack callback, the current states arrive as `presence` events \
                                 and errors as an `error` event {message, code}",
        },
        "unsubscribe_presence": {
            "direction": "client-to-server",
            "summary": "Stop watching users.",
            "payload": json_ref("SubscribePresenceRequest"),
            "ack": {"success": json_ref("UnsubscribePresenceAck"), "failure": failure},
            "emits": [],
            "errors": ["unauthorized", "validation_failed"],
            "errorsWithoutAck": "without an ack callback, errors arrive as an `error` event {message, code}",
        },
        "presence": {
            "direction": "server-to-client",
            "summary": "A watched user went online or offline.",
            "payload": json_ref("Presence"),
        },
        "error": {"direction": "server-to-client", "summary": "A failed event of a client that passed no ack callback.",
                  "payload": json_ref("Error")},
    })
}

pub(crate) fn fragment(config: &PresenceConfig) -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .paths(paths())
        .components(Some(components().build()))
        .build();
    doc.extensions = Some(Extensions::from_iter([("x-socket-events", socket_events(config))]));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_has_the_path_schemas_and_events() {
        let doc = serde_json::to_value(fragment(&PresenceConfig::default())).unwrap();
        let get = &doc["paths"]["/users/{id}/presence"]["get"];
        assert!(get.is_object());
        for status in ["200", "401", "404"] {
            assert!(get["responses"][status].is_object(), "missing {status}");
        }
        let schemas = &doc["components"]["schemas"];
        let presence = &schemas["Presence"]["properties"];
        for field in ["userId", "online", "lastSeen"] {
            assert!(presence[field].is_object(), "Presence lacks {field}");
        }
        let events = &doc["x-socket-events"];
        for e in ["subscribe_presence", "unsubscribe_presence", "presence", "error"] {
            assert!(events[e]["direction"].is_string(), "missing event {e}");
        }
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas[name].is_object(), "dangling ref {name}");
        }
    }
}
