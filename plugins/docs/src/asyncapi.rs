//! The AsyncAPI 3.0 document of the Socket.IO API, derived from the assembled OpenAPI
//! document: its socket events (`x-socket-events`), handshake and security schemes (the
//! sdk's `docs` module describes the fragments).

use std::collections::BTreeMap;

use confab_sdk::docs::{SOCKET_HANDSHAKE, SocketEvent, SocketHandshake, schema_refs, socket_events};
use confab_sdk::utoipa::openapi::OpenApi;
use serde_json::{Map, Value, json};

/// The Socket.IO namespace, the only channel.
const CHANNEL: &str = "root";
const SERVER: &str = "confab";

/// The AsyncAPI 3.0 document of the Socket.IO API described by `doc`'s socket events,
/// handshake and security schemes. Fails only if a plugin's event description is malformed.
pub fn asyncapi(doc: &OpenApi) -> Result<Value, String> {
    let openapi = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    asyncapi_from_value(&openapi)
}

/// [`asyncapi`] on the JSON form of the OpenAPI document.
pub fn asyncapi_from_value(openapi: &Value) -> Result<Value, String> {
    let events = socket_events(openapi)?;
    let handshake: SocketHandshake = match openapi.get(SOCKET_HANDSHAKE) {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("{SOCKET_HANDSHAKE}: {e}"))?,
        None => SocketHandshake::default(),
    };
    let mut b = Builder::default();
    let schemes = security_schemes(openapi, &handshake);
    b.handshake(&handshake, &schemes);
    for (name, event) in &events {
        if event.direction.from_client() {
            b.client_event(name, event);
        }
    }
    // Server-to-client events: declared ones first, then those only named in `emits`.
    for (name, event) in &events {
        if event.direction.to_client() {
            let emitted = event
                .emits
                .iter()
                .find(|e| &e.event == name)
                .and_then(|e| e.payload.clone());
            let payload = emitted.or_else(|| event.payload.clone());
            b.server_event(name, &event.summary, event.description.as_deref(), payload);
        }
    }
    for (cause, event) in &events {
        for e in &event.emits {
            if !b.messages.contains_key(&format!("server.{}", e.event)) {
                let summary = format!("Emitted after `{cause}`.");
                b.server_event(&e.event, &summary, None, e.payload.clone());
            }
        }
    }

    let info = openapi.get("info").cloned().unwrap_or_else(|| json!({}));
    let title = info.get("title").and_then(Value::as_str).unwrap_or("Confab");
    let version = info.get("version").and_then(Value::as_str).unwrap_or("0.0.0");
    let (server, channel_binding) = server(openapi, &schemes);
    let schemas = reachable_schemas(openapi, &b.messages);
    let mut components = Map::new();
    if !schemas.is_empty() {
        components.insert("schemas".into(), Value::Object(schemas));
    }
    components.insert(
        "messages".into(),
        Value::Object(b.messages.clone().into_iter().collect()),
    );
    if !schemes.is_empty() {
        components.insert("securitySchemes".into(), Value::Object(schemes.into_iter().collect()));
    }
    let channel_messages: Map<String, Value> = b
        .messages
        .keys()
        .map(|k| (k.clone(), json!({"$ref": format!("#/components/messages/{k}")})))
        .collect();
    Ok(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": format!(
                "The Socket.IO API of {title} (Socket.IO protocol 5, namespace `/`). Every message is a Socket.IO \
                 event: `name` is the event name, the payload its first argument. Client events may take an \
                 ack callback: its argument is the operation's reply. Generated from the `x-socket-events` of \
                 the OpenAPI document."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {SERVER: server},
        "channels": {CHANNEL: {
            "address": "/",
            "title": "Namespace /",
            "description": "The default Socket.IO namespace; every event travels on it.",
            "servers": [{"$ref": format!("#/servers/{SERVER}")}],
            "messages": channel_messages,
            "bindings": {"ws": channel_binding},
        }},
        "operations": Value::Object(b.operations.into_iter().collect()),
        "components": components,
    }))
}

fn message_ref(key: &str) -> Value {
    json!({"$ref": format!("#/channels/{CHANNEL}/messages/{key}")})
}

fn channel_ref() -> Value {
    json!({"$ref": format!("#/channels/{CHANNEL}")})
}

fn message(name: &str, title: String, summary: &str, description: Option<&str>, payload: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("title".into(), json!(title));
    if !summary.is_empty() {
        m.insert("summary".into(), json!(summary));
    }
    if let Some(d) = description {
        m.insert("description".into(), json!(d));
    }
    if let Some(p) = payload {
        m.insert("payload".into(), p);
    }
    Value::Object(m)
}

/// Messages and operations, keyed so that client events, server events, acks and the
/// handshake never collide even when one event name travels both ways (`typing`).
#[derive(Default)]
struct Builder {
    messages: BTreeMap<String, Value>,
    operations: BTreeMap<String, Value>,
}

impl Builder {
    fn handshake(&mut self, hs: &SocketHandshake, schemes: &BTreeMap<String, Value>) {
        let auth = hs.auth.clone().unwrap_or_else(|| json!({"type": "object"}));
        self.messages.insert(
            "client.connect".into(),
            message(
                "connect",
                "Handshake".into(),
                "The CONNECT packet; its data is the client's `auth` option.",
                hs.description.as_deref(),
                Some(auth),
            ),
        );
        self.messages.insert(
            "server.connect".into(),
            message(
                "connect",
                "Handshake accepted".into(),
                "The CONNECT packet acknowledging the handshake.",
                None,
                Some(json!({"type": "object", "required": ["sid"], "properties": {"sid": {"type": "string"}}})),
            ),
        );
        self.messages.insert(
            "server.connect_error".into(),
            message(
                "connect_error",
                "Handshake refused".into(),
                "The CONNECT_ERROR packet: the socket is refused; `message` says why.",
                None,
                Some(json!({"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}})),
            ),
        );
        let mut op = json!({
            "action": "receive",
            "channel": channel_ref(),
            "title": "Connect",
            "summary": "Open a socket on the namespace, authenticated at the handshake.",
            "messages": [message_ref("client.connect")],
            "reply": {
                "channel": channel_ref(),
                "messages": [message_ref("server.connect"), message_ref("server.connect_error")],
            },
        });
        if !schemes.is_empty() {
            op["security"] = schemes
                .keys()
                .map(|k| json!({"$ref": format!("#/components/securitySchemes/{k}")}))
                .collect();
        }
        if let Some(d) = &hs.description {
            op["description"] = json!(d);
        }
        self.operations.insert("client.connect".into(), op);
    }

    fn client_event(&mut self, name: &str, e: &SocketEvent) {
        let key = format!("client.{name}");
        self.messages.insert(
            key.clone(),
            message(
                name,
                format!("{name} (client)"),
                &e.summary,
                e.description.as_deref(),
                e.payload.clone(),
            ),
        );
        let mut op = Map::new();
        op.insert("action".into(), json!("receive"));
        op.insert("channel".into(), channel_ref());
        op.insert("title".into(), json!(name));
        if !e.summary.is_empty() {
            op.insert("summary".into(), json!(e.summary));
        }
        op.insert("description".into(), json!(describe(name, e)));
        op.insert("messages".into(), json!([message_ref(&key)]));
        if let Some(ack) = &e.ack {
            let ok = format!("{key}.ack");
            self.messages.insert(
                ok.clone(),
                message(
                    name,
                    format!("{name} ack"),
                    "The ack of a successful event.",
                    None,
                    Some(ack.success.clone()),
                ),
            );
            let mut replies = vec![message_ref(&ok)];
            if let Some(failure) = &ack.failure {
                let err = format!("{key}.ackError");
                self.messages.insert(
                    err.clone(),
                    message(
                        name,
                        format!("{name} ack (error)"),
                        "The ack of a failed event.",
                        None,
                        Some(failure.clone()),
                    ),
                );
                replies.push(message_ref(&err));
            }
            op.insert("reply".into(), json!({"channel": channel_ref(), "messages": replies}));
        }
        if !e.emits.is_empty() {
            let emits: Vec<Value> = e
                .emits
                .iter()
                .map(|m| json!({"event": m.event, "to": m.to, "operation": {"$ref": format!("#/operations/server.{}", m.event)}}))
                .collect();
            op.insert("x-emits".into(), Value::Array(emits));
        }
        if !e.errors.is_empty() {
            op.insert("x-errors".into(), json!(e.errors));
        }
        for (k, v) in &e.extra {
            op.insert(format!("x-{k}"), v.clone());
        }
        self.operations.insert(key, Value::Object(op));
    }

    fn server_event(&mut self, name: &str, summary: &str, description: Option<&str>, payload: Option<Value>) {
        let key = format!("server.{name}");
        self.messages.insert(
            key.clone(),
            message(name, format!("{name} (server)"), summary, description, payload),
        );
        let mut op =
            json!({"action": "send", "channel": channel_ref(), "title": name, "messages": [message_ref(&key)]});
        if !summary.is_empty() {
            op["summary"] = json!(summary);
        }
        self.operations.insert(key, op);
    }
}

/// The operation's description: the event's own text, then its results and errors in words.
fn describe(name: &str, e: &SocketEvent) -> String {
    let mut parts: Vec<String> = e.description.iter().cloned().collect();
    if !e.emits.is_empty() {
        let list: Vec<String> = e
            .emits
            .iter()
            .map(|m| {
                if m.to.is_empty() {
                    format!("`{}`", m.event)
                } else {
                    format!("`{}` to {}", m.event, m.to)
                }
            })
            .collect();
        parts.push(format!("Emits: {}.", list.join("; ")));
    }
    match &e.ack {
        Some(_) => parts.push("Pass an ack callback to get the reply.".into()),
        None => parts.push(format!("`{name}` sends no ack.")),
    }
    if !e.errors.is_empty() {
        parts.push(format!("Error codes: {}.", e.errors.join(", ")));
    }
    parts.join("\n\n")
}

/// The OpenAPI security schemes usable at the handshake, in AsyncAPI form.
fn security_schemes(openapi: &Value, hs: &SocketHandshake) -> BTreeMap<String, Value> {
    let Some(Value::Object(all)) = openapi.pointer("/components/securitySchemes") else {
        return BTreeMap::new();
    };
    all.iter()
        .filter(|(name, _)| hs.security.is_empty() || hs.security.contains(name))
        .filter_map(|(name, s)| {
            let description = s.get("description").and_then(Value::as_str);
            let mut converted = match s.get("type").and_then(Value::as_str)? {
                "http" => {
                    let mut v = json!({"type": "http", "scheme": s.get("scheme")?});
                    if let Some(f) = s.get("bearerFormat") {
                        v["bearerFormat"] = f.clone();
                    }
                    v
                }
                "apiKey" => json!({"type": "httpApiKey", "name": s.get("name")?, "in": s.get("in")?}),
                _ => return None,
            };
            let said = match (converted["type"].as_str(), converted["in"].as_str()) {
                (Some("http"), _) => "Sent in the `Authorization` header of the handshake's HTTP request.".to_owned(),
                (_, Some(place)) => format!(
                    "Sent as the {place} `{}` of the handshake's HTTP request.",
                    converted["name"].as_str().unwrap_or_default()
                ),
                _ => String::new(),
            };
            converted["description"] = json!(description.map_or(said.clone(), |d| format!("{d} {said}")));
            Some((name.clone(), converted))
        })
        .collect()
}

/// The server (host and path from the OpenAPI document's first absolute server URL, else a
/// `{host}` variable) and the WebSocket binding of the namespace's HTTP request.
fn server(openapi: &Value, schemes: &BTreeMap<String, Value>) -> (Value, Value) {
    let url = openapi.pointer("/servers/0/url").and_then(Value::as_str).unwrap_or("");
    let (protocol, rest) = match url.split_once("://") {
        Some(("https", rest)) => ("wss", rest),
        Some((_, rest)) => ("ws", rest),
        None => ("ws", ""),
    };
    let (host, base) = rest
        .split_once('/')
        .map_or((rest, ""), |(h, p)| (h, p.trim_end_matches('/')));
    let pathname = if base.is_empty() {
        "/socket.io/".to_owned()
    } else {
        format!("/{base}/socket.io/")
    };
    let mut server = json!({
        "host": if host.is_empty() { "{host}" } else { host },
        "protocol": protocol,
        "pathname": pathname,
        "description": "Socket.IO over Engine.IO 4: a WebSocket, or HTTP long-polling upgraded to one. Official \
                        socket.io-client 3 and 4 connect with `io(\"<origin>\")`.",
    });
    if host.is_empty() {
        server["variables"] =
            json!({"host": {"default": "localhost:3000", "description": "Host and port of the server."}});
    }
    if !schemes.is_empty() {
        server["security"] = schemes
            .keys()
            .map(|k| json!({"$ref": format!("#/components/securitySchemes/{k}")}))
            .collect();
    }
    let mut headers = Map::new();
    let mut query = Map::new();
    query.insert(
        "EIO".into(),
        json!({"type": "string", "const": "4", "description": "Engine.IO protocol version."}),
    );
    query.insert(
        "transport".into(),
        json!({"type": "string", "enum": ["websocket", "polling"]}),
    );
    for (scheme, s) in schemes {
        let (place, name, value) = match (s["type"].as_str(), s["in"].as_str(), s["name"].as_str()) {
            (Some("http"), _, _) => {
                let kind = s["scheme"].as_str().unwrap_or("bearer");
                (
                    "header",
                    "Authorization",
                    format!("`{}{} <credentials>`", kind[..1].to_uppercase(), &kind[1..]),
                )
            }
            (_, Some("cookie"), Some(name)) => ("header", "Cookie", format!("`{name}=<value>`")),
            (_, Some(place), Some(name)) => (place, name, "the credential".to_owned()),
            _ => continue,
        };
        let entry = json!({"type": "string", "description": format!("{value} (security scheme `{scheme}`)")});
        if place == "query" {
            query.insert(name.to_owned(), entry);
        } else {
            headers.insert(name.to_owned(), entry);
        }
    }
    let mut binding = json!({
        "method": "GET",
        "query": {"type": "object", "properties": query},
        "bindingVersion": "0.1.0",
    });
    if !headers.is_empty() {
        binding["headers"] = json!({"type": "object", "properties": headers});
    }
    (server, binding)
}

/// The OpenAPI component schemas the messages refer to, transitively.
fn reachable_schemas(openapi: &Value, messages: &BTreeMap<String, Value>) -> Map<String, Value> {
    let all = openapi.pointer("/components/schemas").and_then(Value::as_object);
    let mut out = Map::new();
    let mut todo = Vec::new();
    for m in messages.values() {
        schema_refs(m, &mut todo);
    }
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(schema) = all.and_then(|a| a.get(&name)) {
            schema_refs(schema, &mut todo);
            out.insert(name, schema.clone());
        }
    }
    out.sort_keys();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openapi() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "Chat", "version": "1.2.3"},
            "paths": {},
            "components": {
                "schemas": {
                    "Req": {"type": "object", "properties": {"to": {"type": "string"}, "inner": {"$ref": "#/components/schemas/Inner"}}},
                    "Inner": {"type": "string"},
                    "Evt": {"type": "object"},
                    "Unused": {"type": "integer"},
                },
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "sid"},
                },
            },
            "x-socket-events": {
                "ping_me": {
                    "direction": "client-to-server",
                    "summary": "Ask for a ping.",
                    "payload": {"$ref": "#/components/schemas/Req"},
                    "ack": {"success": {"type": "object"}, "failure": {"type": "object"}},
                    "emits": [{"event": "pinged", "to": "the sender", "payload": {"$ref": "#/components/schemas/Evt"}}],
                    "errors": ["validation_failed"],
                    "idempotency": "none",
                },
                "typing": {
                    "direction": "both",
                    "payload": {"type": "object", "required": ["to"]},
                    "emits": [{"event": "typing", "payload": {"type": "object", "required": ["from"]}}],
                },
                "error": {"direction": "server-to-client", "payload": {"type": "object"}},
            },
            "x-socket-handshake": {"auth": {"type": "object", "properties": {"token": {"type": "string"}}}, "security": ["bearerAuth"]},
        })
    }

    #[test]
    fn every_event_becomes_messages_and_operations() {
        let doc = asyncapi_from_value(&openapi()).unwrap();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["title"], "Chat");
        let ops = &doc["operations"];
        assert_eq!(ops["client.ping_me"]["action"], "receive");
        assert_eq!(
            ops["client.ping_me"]["reply"]["messages"][1]["$ref"],
            "#/channels/root/messages/client.ping_me.ackError"
        );
        assert_eq!(ops["client.ping_me"]["x-idempotency"], "none");
        assert_eq!(
            ops["client.ping_me"]["x-emits"][0]["operation"]["$ref"],
            "#/operations/server.pinged"
        );
        assert_eq!(ops["server.pinged"]["action"], "send");
        assert_eq!(ops["server.error"]["action"], "send");
        // Both directions, each with its own payload.
        let msgs = &doc["components"]["messages"];
        assert_eq!(msgs["client.typing"]["payload"]["required"][0], "to");
        assert_eq!(msgs["server.typing"]["payload"]["required"][0], "from");
        assert_eq!(msgs["server.typing"]["name"], "typing");
        // Every operation message is a message of the channel.
        let channel = &doc["channels"]["root"]["messages"];
        for op in ops.as_object().unwrap().values() {
            for m in op["messages"].as_array().unwrap() {
                let key = m["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                assert!(channel[key].is_object(), "{key}");
            }
        }
        // Only reachable schemas are copied, transitively.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("Inner") && schemas.contains_key("Evt"));
        assert!(!schemas.contains_key("Unused"));
        // The handshake: only the schemes it names, as AsyncAPI schemes and binding headers.
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["type"], "http");
        assert!(doc["components"]["securitySchemes"].get("cookieAuth").is_none());
        assert_eq!(
            msgs["client.connect"]["payload"]["properties"]["token"]["type"],
            "string"
        );
        assert!(doc["channels"]["root"]["bindings"]["ws"]["headers"]["properties"]["Authorization"].is_object());
        assert_eq!(doc["servers"]["confab"]["host"], "{host}");
    }

    #[test]
    fn without_handshake_security_every_scheme_applies_and_servers_come_from_the_document() {
        let mut o = openapi();
        o.as_object_mut().unwrap().remove(SOCKET_HANDSHAKE);
        o["servers"] = json!([{"url": "https://chat.example.com/api/"}]);
        let doc = asyncapi_from_value(&o).unwrap();
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(
            schemes["cookieAuth"],
            json!({"type": "httpApiKey", "in": "cookie", "name": "sid",
            "description": "Sent as the cookie `sid` of the handshake's HTTP request."})
        );
        let s = &doc["servers"]["confab"];
        assert_eq!(
            (s["host"].as_str(), s["protocol"].as_str(), s["pathname"].as_str()),
            (Some("chat.example.com"), Some("wss"), Some("/api/socket.io/"))
        );
        assert!(s.get("variables").is_none());
        assert_eq!(s["security"].as_array().unwrap().len(), 2);
        assert!(doc["channels"]["root"]["bindings"]["ws"]["headers"]["properties"]["Cookie"].is_object());
    }

    #[test]
    fn a_malformed_event_is_named() {
        let mut o = openapi();
        o["x-socket-events"]["bad"] = json!({"direction": "sideways"});
        let e = asyncapi_from_value(&o).unwrap_err();
        assert!(e.contains("x-socket-events.bad"), "{e}");
    }
}
