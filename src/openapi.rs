//! The OpenAPI document: the kernel's own paths merged with the enabled plugins' fragments.

use confab_sdk::error::ApiError;
use serde_json::Value;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};

fn json_response(description: &str, schema: RefOr<Schema>) -> utoipa::openapi::Response {
    ResponseBuilder::new().description(description).content("application/json", ContentBuilder::new().schema(Some(schema)).build()).build()
}

fn error_ref() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Error"))
}

/// The kernel's fragment: `/health`, `/ready`, and `/metrics` when enabled.
pub fn kernel_fragment(metrics: bool) -> OpenApi {
    let status = serde_json::json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}});
    let status_schema: RefOr<Schema> = serde_json::from_value(status).unwrap_or_else(|_| RefOr::T(Schema::default()));
    let mut paths = PathsBuilder::new()
        .path(
            "/health",
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new().operation_id(Some("health")).summary(Some("Liveness")).tag("kernel").response("200", json_response("The process is up", status_schema.clone())),
            ),
        )
        .path(
            "/ready",
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .operation_id(Some("ready"))
                    .summary(Some("Readiness: storage and cluster checks"))
                    .tag("kernel")
                    .response("200", json_response("Every check passed", status_schema))
                    .response("503", json_response("A check failed; `checks` says which", error_ref())),
            ),
        );
    if metrics {
        paths = paths.path(
            "/metrics",
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .operation_id(Some("metrics"))
                    .summary(Some("Prometheus metrics"))
                    .tag("kernel")
                    .response("200", ResponseBuilder::new().description("Text exposition format").content("text/plain", ContentBuilder::new().schema(Some(String::schema())).build())),
            ),
        );
    }
    let mut components = utoipa::openapi::ComponentsBuilder::new();
    components = components.schema(<ApiError as ToSchema>::name(), ApiError::schema());
    let mut schemas = Vec::new();
    <ApiError as ToSchema>::schemas(&mut schemas);
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(InfoBuilder::new().title("Confab").version(env!("CARGO_PKG_VERSION")).description(Some("Real-time one-to-one chat: REST for integrators; Socket.IO events are listed under x-socket-events.")))
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// Merges the fragments in order: the kernel's, then each plugin's. utoipa's merge keeps
/// only the first document's extensions, so `x-socket-events` are gathered here.
pub fn assemble(kernel: OpenApi, fragments: &[OpenApi]) -> OpenApi {
    let mut doc = kernel;
    let mut events = serde_json::Map::new();
    for f in fragments {
        if let Some(Value::Object(m)) = f.extensions.as_ref().and_then(|e| e.get("x-socket-events")) {
            events.extend(m.clone());
        }
        doc.merge(f.clone());
    }
    let ext = doc.extensions.get_or_insert_with(Default::default);
    ext.merge(ExtensionsBuilder::new().add("x-socket-events", Value::Object(events)).build());
    doc
}
