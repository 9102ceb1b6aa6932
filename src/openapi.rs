//! The OpenAPI document: the kernel's own paths merged with the enabled plugins' fragments,
//! then completed with what the kernel guarantees on every route (JSON error bodies, the
//! body limit) so that each fragment does not have to repeat it.

use confab_sdk::docs::build::{json_response, schema_ref};
use std::collections::BTreeSet;

use confab_sdk::docs::{DOCUMENT_INFO, SCHEMA_REF, SOCKET_EVENTS, SOCKET_HANDSHAKE, SocketHandshake, schema_refs};
use confab_sdk::error::ApiError;
use confab_sdk::plugin::DocumentPass;
use serde_json::{Map, Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, PathItem};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

fn schema(v: Value) -> RefOr<Schema> {
    serde_json::from_value(v).expect("a literal JSON Schema the kernel writes")
}

/// The kernel's fragment: `/health`, `/ready`, `/metrics` when enabled, the Error schema,
/// and the parts of the socket API the kernel itself owns (the `error` event, the handshake).
pub fn kernel_fragment(metrics: bool) -> OpenApi {
    let mut paths = PathsBuilder::new()
        .path(
            "/health",
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .operation_id(Some("health"))
                    .summary(Some("Liveness: the process answers"))
                    .tag("kernel")
                    .response("200", json_response("The process is up", schema_ref("Health"))),
            ),
        )
        .path(
            "/ready",
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .operation_id(Some("ready"))
                    .summary(Some("Readiness: storage and cluster checks"))
                    .description(Some("503 while a check fails or while the server shuts down."))
                    .tag("kernel")
                    .response("200", json_response("Every check passed", schema_ref("Ready")))
                    .response(
                        "503",
                        json_response("A check failed; `checks` says which", schema_ref("NotReady")),
                    ),
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
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("Prometheus text exposition format 0.0.4")
                            .content(
                                "text/plain",
                                ContentBuilder::new().schema(Some(String::schema())).build(),
                            ),
                    ),
            ),
        );
    }
    let checks = json!({"type": "object", "additionalProperties": {"type": "string"},
        "description": "Each check's result: `ok`, or why it failed."});
    let mut components = utoipa::openapi::ComponentsBuilder::new()
        .schema(<ApiError as ToSchema>::name(), ApiError::schema())
        .schema(
            "Health",
            schema(json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}})),
        )
        .schema(
            "Ready",
            schema(json!({"type": "object", "required": ["status", "checks"],
                "properties": {"status": {"type": "string", "enum": ["ok"]}, "checks": checks}})),
        )
        .schema(
            "NotReady",
            schema(json!({"allOf": [{"$ref": "#/components/schemas/Error"}, {"type": "object", "required": ["status", "checks"],
                "properties": {"status": {"type": "string", "enum": ["unavailable"]}, "checks": checks}}]})),
        );
    let mut nested = Vec::new();
    <ApiError as ToSchema>::schemas(&mut nested);
    components = components.schemas_from_iter(nested);
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Confab")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Real-time one-to-one chat. REST for integrators; the Socket.IO events are listed under \
                     `x-socket-events` (and, with the docs plugin, as an AsyncAPI document at `/asyncapi.json`). \
                     Every error is JSON `{message, code}`.",
                ))
                .license(Some(LicenseBuilder::new().name("MIT").identifier(Some("MIT")).build())),
        )
        .paths(paths)
        .components(Some(components.build()))
        .tags(Some(vec![
            TagBuilder::new()
                .name("kernel")
                .description(Some("Health, readiness and metrics"))
                .build(),
        ]))
        .build();
    doc.extensions = Some(Extensions::from_iter([
        (
            SOCKET_EVENTS,
            json!({"error": {
                "direction": "server-to-client",
                "summary": "A client event failed and the client passed no ack callback (with one, the ack gets \
                            `{ok: false, error}`): an undecodable payload, too many events in flight, or the \
                            handler's own error.",
                "payload": {"$ref": "#/components/schemas/Error"},
            }}),
        ),
        (
            SOCKET_HANDSHAKE,
            json!({"description": "The enabled plugins' connect middleware checks the handshake; a refused socket \
                                   gets `connect_error` whose message says why."}),
        ),
    ]));
    doc
}

/// Merges the fragments in order (the kernel's, then each plugin's), runs the plugins'
/// document passes and completes the result. utoipa's merge keeps only the first document's extensions and silently drops
/// a second definition of a schema or operation, so extensions are merged here and
/// conflicting definitions are logged.
pub fn assemble(kernel: OpenApi, fragments: &[OpenApi], passes: &[DocumentPass]) -> OpenApi {
    let mut doc = kernel;
    let mut ext = doc.extensions.take().unwrap_or_default();
    let mut events = match ext.remove(SOCKET_EVENTS) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut handshake = Handshake::default();
    handshake.add(ext.remove(SOCKET_HANDSHAKE));
    let mut info = None;
    for f in fragments {
        let mut f = f.clone();
        for problem in conflicts(&doc, &f) {
            tracing::warn!(%problem, "OpenAPI fragments conflict; the first definition is kept");
        }
        let mut fext = f.extensions.take().unwrap_or_default();
        if let Some(Value::Object(m)) = fext.remove(SOCKET_EVENTS) {
            for (name, event) in m {
                match events.get(&name) {
                    // Several plugins may declare the same server event (`error`); the
                    // first description stands as long as they agree on the shape.
                    Some(first) if same_shape(first, &event) => {}
                    Some(_) => tracing::warn!(event = %name, "socket event declared twice with different shapes"),
                    None => {
                        events.insert(name, event);
                    }
                }
            }
        }
        handshake.add(fext.remove(SOCKET_HANDSHAKE));
        if let Some(v) = fext.remove(DOCUMENT_INFO) {
            info = Some(v);
        }
        ext.extend(fext.drain());
        doc.merge(f);
    }
    if let Some(Value::Object(i)) = info {
        if let Some(t) = i.get("title").and_then(Value::as_str) {
            doc.info.title = t.to_owned();
        }
        if let Some(d) = i.get("description").and_then(Value::as_str) {
            doc.info.description = Some(d.to_owned());
        }
    }
    for pass in passes {
        pass(&mut doc);
    }
    complete_operations(&mut doc);
    declare_tags(&mut doc);
    events.sort_keys();
    ext.insert(SOCKET_EVENTS.to_owned(), Value::Object(events));
    if let Some(h) = handshake.finish() {
        ext.insert(SOCKET_HANDSHAKE.to_owned(), h);
    }
    doc.extensions = Some(ext);
    for r in dangling_refs(&doc) {
        tracing::warn!(reference = %r, "the OpenAPI document refers to a schema nobody defines");
    }
    doc
}

fn same_shape(a: &Value, b: &Value) -> bool {
    a.get("direction") == b.get("direction") && a.get("payload") == b.get("payload")
}

/// The plugins' handshake descriptions merged into one [`SocketHandshake`].
#[derive(Default)]
struct Handshake {
    merged: SocketHandshake,
    descriptions: Vec<String>,
    any: bool,
}

impl Handshake {
    fn add(&mut self, v: Option<Value>) {
        let Some(v) = v else { return };
        let h: SocketHandshake = match serde_json::from_value(v) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed {SOCKET_HANDSHAKE}");
                return;
            }
        };
        self.any = true;
        self.descriptions.extend(h.description);
        for s in h.security {
            if !self.merged.security.contains(&s) {
                self.merged.security.push(s);
            }
        }
        if let Some(auth) = h.auth {
            let target = self
                .merged
                .auth
                .get_or_insert_with(|| json!({"type": "object", "properties": {}}));
            if let (Some(Value::Object(props)), Some(Value::Object(add))) =
                (target.get_mut("properties"), auth.get("properties"))
            {
                props.extend(add.clone());
            }
            if let Some(Value::String(d)) = auth.get("description") {
                target["description"] = json!(d);
            }
        }
    }

    fn finish(mut self) -> Option<Value> {
        if !self.any {
            return None;
        }
        if !self.descriptions.is_empty() {
            self.merged.description = Some(self.descriptions.join(" "));
        }
        serde_json::to_value(self.merged).ok()
    }
}

/// What a fragment would silently lose in utoipa's merge: a schema defined differently, an
/// operation (path + method) already present.
fn conflicts(doc: &OpenApi, f: &OpenApi) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(mine), Some(theirs)) = (&doc.components, &f.components) {
        for (name, s) in &theirs.schemas {
            if let Some(first) = mine.schemas.get(name)
                && serde_json::to_value(first).ok() != serde_json::to_value(s).ok()
            {
                out.push(format!("schema {name} is defined twice, differently"));
            }
        }
    }
    for (path, item) in &f.paths.paths {
        if let Some(first) = doc.paths.paths.get(path) {
            for (method, _) in operations(item) {
                if operations(first).iter().any(|(m, _)| *m == method) {
                    out.push(format!("{method} {path} is documented twice"));
                }
            }
        }
    }
    out
}

fn operations(item: &PathItem) -> Vec<(&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("HEAD", &item.head),
        ("PATCH", &item.patch),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
    .collect()
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Adds what the kernel guarantees to every operation: error responses carry the Error
/// body (the catcher renders every bodiless error as one); an operation that reads a body
/// may answer 400 (malformed JSON) and 413 (`server.body_limit`); a secured one 401.
fn complete_operations(doc: &mut OpenApi) {
    let error = || json_response("", schema_ref("Error"));
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            let responses = &mut op.responses.responses;
            if op.request_body.is_some() {
                responses.entry("400".into()).or_insert_with(|| {
                    let mut r = error();
                    r.description = "The body is not valid JSON or a field is invalid; `field` names it".into();
                    RefOr::T(r)
                });
                responses.entry("413".into()).or_insert_with(|| {
                    let mut r = error();
                    r.description = "The body exceeds `server.body_limit`".into();
                    RefOr::T(r)
                });
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                responses.entry("401".into()).or_insert_with(|| {
                    let mut r = error();
                    r.description = "Missing, invalid, expired or revoked credentials".into();
                    RefOr::T(r)
                });
            }
            for (status, response) in responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5') || status == "default";
                if let RefOr::T(r) = response
                    && is_error
                    && r.content.is_empty()
                {
                    r.content.insert(
                        "application/json".into(),
                        ContentBuilder::new().schema(Some(schema_ref("Error"))).build(),
                    );
                }
            }
        }
    }
}

/// Declares every tag an operation uses, so UIs group and order them.
fn declare_tags(doc: &mut OpenApi) {
    let used: BTreeSet<String> = doc
        .paths
        .paths
        .values()
        .flat_map(|item| {
            operations(item)
                .into_iter()
                .flat_map(|(_, op)| op.tags.clone().unwrap_or_default())
        })
        .collect();
    let tags = doc.tags.get_or_insert_with(Vec::new);
    for t in used {
        if !tags.iter().any(|d| d.name == t) {
            tags.push(TagBuilder::new().name(t).build());
        }
    }
}

/// `$ref`s to `#/components/schemas/...` with no such schema.
fn dangling_refs(doc: &OpenApi) -> Vec<String> {
    let v = serde_json::to_value(doc).unwrap_or_default();
    let defined = v.pointer("/components/schemas").and_then(Value::as_object);
    let mut names = BTreeSet::new();
    schema_refs(&v, &mut names);
    names
        .into_iter()
        .filter(|name| !defined.is_some_and(|d| d.contains_key(name)))
        .map(|name| format!("{SCHEMA_REF}{name}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::security::SecurityRequirement;

    use super::*;

    fn fragment(path: &str, op: OperationBuilder, ext: Value) -> OpenApi {
        let mut f = OpenApiBuilder::new()
            .paths(PathsBuilder::new().path(path, PathItem::new(HttpMethod::Post, op)))
            .build();
        if let Value::Object(m) = ext {
            f.extensions = Some(Extensions::from_iter(m));
        }
        f
    }

    #[test]
    fn merges_events_handshakes_and_info_and_completes_errors() {
        let a = fragment(
            "/a",
            OperationBuilder::new()
                .tag("alpha")
                .request_body(Some(RequestBodyBuilder::new().build()))
                .security(SecurityRequirement::new("bearerAuth", Vec::<String>::new()))
                .response("201", ResponseBuilder::new().description("made"))
                .response("409", ResponseBuilder::new().description("taken")),
            json!({
                "x-socket-events": {"ping": {"direction": "client-to-server", "payload": {}},
                                    "error": {"direction": "server-to-client", "payload": {"$ref": "#/components/schemas/Error"}, "summary": "mine"}},
                "x-socket-handshake": {"auth": {"properties": {"token": {"type": "string"}}}, "security": ["bearerAuth"], "description": "Token."},
            }),
        );
        let b = fragment(
            "/b",
            OperationBuilder::new(),
            json!({"x-socket-events": {"pong": {"direction": "server-to-client"}}, "x-document-info": {"title": "Acme"}}),
        );
        let doc = serde_json::to_value(assemble(kernel_fragment(false), &[a, b], &[])).unwrap();
        assert_eq!(doc["info"]["title"], "Acme");
        assert_eq!(doc["openapi"], "3.1.0");
        let events = doc["x-socket-events"].as_object().unwrap();
        assert_eq!(events.keys().collect::<Vec<_>>(), ["error", "ping", "pong"]);
        // The kernel's `error` came first and the plugin's agrees on the shape.
        assert_ne!(events["error"]["summary"], "mine");
        let hs = &doc["x-socket-handshake"];
        assert_eq!(hs["auth"]["properties"]["token"]["type"], "string");
        assert_eq!(hs["security"], json!(["bearerAuth"]));
        assert!(hs["description"].as_str().unwrap().ends_with("Token."));
        assert!(doc.get("x-document-info").is_none());
        let responses = &doc["paths"]["/a"]["post"]["responses"];
        for status in ["400", "401", "409", "413"] {
            assert_eq!(
                responses[status]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{status}"
            );
        }
        assert!(responses["201"].get("content").is_none());
        assert!(doc["paths"]["/b"]["post"]["responses"].get("401").is_none());
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["kernel", "alpha"]);
    }

    #[test]
    fn the_kernel_fragment_is_complete() {
        let doc = serde_json::to_value(assemble(kernel_fragment(true), &[], &[])).unwrap();
        assert!(doc["paths"]["/metrics"]["get"].is_object());
        assert!(dangling_refs(&assemble(kernel_fragment(true), &[], &[])).is_empty());
        assert_eq!(doc["x-socket-events"]["error"]["direction"], "server-to-client");
        for s in ["Error", "ErrorCode", "Health", "Ready", "NotReady"] {
            assert!(doc["components"]["schemas"][s].is_object(), "{s}");
        }
        let without = serde_json::to_value(assemble(kernel_fragment(false), &[], &[])).unwrap();
        assert!(without["paths"].get("/metrics").is_none());
    }

    #[test]
    fn conflicting_definitions_are_found() {
        let a = fragment("/a", OperationBuilder::new(), json!({}));
        let doc = assemble(kernel_fragment(false), std::slice::from_ref(&a), &[]);
        assert_eq!(conflicts(&doc, &a), ["POST /a is documented twice"]);
        let mut b = OpenApiBuilder::new().build();
        b.components = Some(
            utoipa::openapi::ComponentsBuilder::new()
                .schema("Error", String::schema())
                .build(),
        );
        assert_eq!(conflicts(&doc, &b), ["schema Error is defined twice, differently"]);
    }
}
