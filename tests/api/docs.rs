//! The API documents against the server that serves them: every documented operation is
//! routed, and every route is documented, for the default plugins and with plugins
//! disabled. The routes come from the kernel's own router (booted in-process with the same
//! TOML), and each is also probed on the real server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use confab::config::{Sources, load};
use confab::server::{HttpParts, service};
use salvo::Router;
use salvo::routing::FilterInfo;
use serde_json::{Value, json};

use crate::support::{Server, unique};

/// Cheap password hashing: registration is not what these tests measure.
const CHEAP: &str = "[auth.password.argon2]\nmemory_kib = 1024\niterations = 1\n";

/// `(METHOD, /path)`, with path parameters as `{name}` like OpenAPI.
type Route = (String, String);

/// Collects the routes of a salvo router: each router with a goal, under the path and
/// method filters of its ancestors. A router without a method filter answers every method.
fn walk(router: &Router, prefix: &str, method: Option<String>, out: &mut BTreeSet<Route>) {
    let mut path = prefix.to_owned();
    let mut method = method;
    for f in &router.filters {
        match f.info() {
            FilterInfo::Path(p) => {
                for segment in p.split('/').filter(|s| !s.is_empty()) {
                    // `{id:num}` and `{id}` are the same parameter to a client.
                    let segment = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(inner) => format!("{{{}}}", inner.split(':').next().unwrap_or(inner)),
                        None => segment.to_owned(),
                    };
                    path = format!("{path}/{segment}");
                }
            }
            FilterInfo::Method(m) => method = Some(m.to_string()),
            other => panic!("route {path}: filter {other:?} is not understood by this test"),
        }
    }
    if router.goal.is_some() {
        let p = if path.is_empty() { "/".to_owned() } else { path.clone() };
        out.insert((method.clone().unwrap_or_else(|| "ANY".into()), p));
    }
    for child in &router.routers {
        walk(child, &path, method.clone(), out);
    }
}

/// What the kernel routes for `toml`, and the client-to-server socket events it handles.
async fn kernel_routes(toml: &str) -> (BTreeSet<Route>, BTreeSet<String>) {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("confab.toml");
    std::fs::write(&file, toml).unwrap();
    let plugins = confab::plugins::compiled();
    let mut config = match load(
        &Sources {
            file: Some(file),
            profile: None,
        },
        &plugins,
    ) {
        Ok(c) => c,
        Err(p) => panic!("config: {p:?}"),
    };
    config.storage.sqlite.path = dir.path().join("confab.db").to_string_lossy().into_owned();
    let booted = confab::app::boot(&config, &plugins).await.unwrap();
    let events = booted.contrib.events.iter().map(|(e, _)| e.clone()).collect();
    let svc = service(
        &config,
        HttpParts {
            routes: booted.contrib.routes,
            hoops: booted.contrib.hoops,
            checks: Vec::new(),
            metrics: booted.metrics.clone(),
            draining: Arc::new(AtomicBool::new(false)),
            socket_route: booted.socket_layer.route(),
            exposed_headers: booted.contrib.exposed_headers,
        },
    );
    booted.store.messages.close().await;
    let mut routes = BTreeSet::new();
    walk(&svc.router, "", None, &mut routes);
    // Socket.IO's endpoint is described by the AsyncAPI document, not the OpenAPI one.
    routes.retain(|(_, p)| !p.starts_with("/socket.io/"));
    (routes, events)
}

fn documented(doc: &Value) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "options", "head", "patch", "trace"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn client_events(doc: &Value) -> BTreeSet<String> {
    doc["x-socket-events"]
        .as_object()
        .expect("x-socket-events")
        .iter()
        .filter(|(_, e)| e["direction"] != "server-to-client")
        .map(|(name, _)| name.clone())
        .collect()
}

/// Calls `method path` (path parameters filled with `id`) and tells whether the router
/// routed it: neither the catcher's "no route" 404 nor a 405.
async fn routed(s: &Server, token: Option<&str>, method: &str, path: &str, id: &str) -> Result<u16, String> {
    let mut url = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        url.push('/');
        url.push_str(if segment.starts_with('{') { id } else { segment });
    }
    let mut req = s.http.request(method.parse().unwrap(), s.url(&url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if method == "POST" {
        req = req.json(&json!({}));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let unrouted =
        status == 405 || (status == 404 && body["message"].as_str().is_some_and(|m| m.starts_with("no route")));
    if unrouted {
        Err(format!("{method} {url} -> {status} {body}"))
    } else {
        Ok(status)
    }
}

async fn check(toml: &str, expect_present: &[&str], expect_absent: &[&str]) {
    let toml = format!("{CHEAP}{toml}");
    let s = Server::start(&toml).await;
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (served, events) = kernel_routes(&toml).await;
    let docs = documented(&doc);
    assert!(
        served.contains(&("GET".into(), "/health".into())),
        "the router walk found {served:?}"
    );

    let undocumented: Vec<_> = served.difference(&docs).collect();
    let unserved: Vec<_> = docs.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not documented: {undocumented:?}");
    assert!(unserved.is_empty(), "documented but not routed: {unserved:?}");
    for p in expect_present {
        assert!(docs.iter().any(|(_, path)| path == p), "{p} missing for {toml}");
    }
    for p in expect_absent {
        assert!(
            !docs.iter().any(|(_, path)| path.starts_with(p)),
            "{p} documented for {toml}"
        );
    }
    assert_eq!(
        client_events(&doc),
        events,
        "documented client events vs handled events"
    );

    // The same on the wire: every route answers, with a real user's id in the path.
    let user = if docs.contains(&("POST".into(), "/auth/register".into())) {
        let r = s
            .http
            .post(s.url("/auth/register"))
            .json(&json!({"username": unique("doc"), "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        Some((
            body["token"].as_str().unwrap().to_owned(),
            body["user"]["id"].as_str().unwrap().to_owned(),
        ))
    } else {
        None
    };
    let (token, id) = match &user {
        Some((t, id)) => (Some(t.as_str()), id.clone()),
        None => (None, "0123456789abcdef01234567".to_owned()),
    };
    // Logout revokes the token: probe it last.
    let mut probes: Vec<_> = docs.iter().collect();
    probes.sort_by_key(|(_, p)| p.contains("logout"));
    let mut failures = Vec::new();
    for (method, path) in probes {
        if let Err(e) = routed(&s, token, method, path, &id).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "documented routes the server does not route: {failures:#?}"
    );
}

#[tokio::test]
async fn default_plugins_document_exactly_what_they_serve() {
    check(
        "",
        &[
            "/health",
            "/ready",
            "/metrics",
            "/auth/login",
            "/chats/{userId}/send",
            "/openapi.json",
            "/docs",
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn a_disabled_plugin_is_neither_served_nor_documented() {
    check(
        "[chat]\nenabled = false\n",
        &["/auth/me", "/asyncapi.json"],
        &["/chats"],
    )
    .await;
    check(
        "[auth]\nenabled = false\n[chat]\nenabled = false\n[presence]\nenabled = false\n[server]\nmetrics = false\n",
        &["/health", "/swagger.yaml"],
        &["/chats", "/auth", "/users", "/metrics"],
    )
    .await;
}

#[tokio::test]
async fn the_documents_agree_and_the_docs_page_replaces_the_csp() {
    let s = Server::start(CHEAP).await;
    let openapi: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    let schemes = &openapi["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["cookieAuth"]["in"], "cookie");
    // Every error response carries the Error schema.
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &r["content"]["application/json"]["schema"];
                    let direct = schema["$ref"] == "#/components/schemas/Error";
                    let derived = schema["allOf"][0]["$ref"] == "#/components/schemas/Error"
                        || openapi["components"]["schemas"]
                            [schema["$ref"].as_str().unwrap_or("").rsplit('/').next().unwrap()]["allOf"][0]["$ref"]
                            == "#/components/schemas/Error";
                    assert!(direct || derived, "{method} {path} {status}: {r}");
                }
            }
        }
    }

    let r = s.http.get(s.url("/swagger.yaml")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/yaml; charset=utf-8");
    let yaml = r.text().await.unwrap();
    assert!(yaml.starts_with("openapi: 3.1.0\n"), "{yaml}");

    let asyncapi: Value = s
        .http
        .get(s.url("/asyncapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
    // Every client event of the OpenAPI document is an operation the server receives.
    for e in client_events(&openapi) {
        assert_eq!(
            asyncapi["operations"][format!("client.{e}")]["action"],
            "receive",
            "{e}"
        );
    }
    assert_eq!(asyncapi["operations"]["server.receive_message"]["action"], "send");
    assert_eq!(asyncapi["components"]["securitySchemes"]["bearerAuth"]["type"], "http");

    // The kernel's strict CSP stays on everything but the page, which gets its own.
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let r = s.http.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src https://cdn.jsdelivr.net 'sha256-"), "{csp}");
    assert_eq!(r.headers().get_all("content-security-policy").iter().count(), 1);
    let html = r.text().await.unwrap();
    assert!(html.contains("integrity=\"sha384-"), "{html}");
    drop(s);

    let s = Server::start(&format!("{CHEAP}[docs]\nui = \"redoc\"\ntitle = \"Acme chat\"\n")).await;
    let html = s.http.get(s.url("/docs")).send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("redoc.standalone.js") && html.contains("<title>Acme chat</title>"),
        "{html}"
    );
    let asyncapi: Value = s
        .http
        .get(s.url("/asyncapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asyncapi["info"]["title"], "Acme chat");
}

#[tokio::test]
async fn the_cli_prints_both_documents_without_serving() {
    let out = crate::support::run_cli(
        &["asyncapi", "--config", "confab.toml"],
        "[chat]\nenabled = false\n",
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc["operations"].get("client.send_message").is_none());
    let out = crate::support::run_cli(&["openapi", "--yaml", "--config", "confab.toml"], "", &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/chats/{userId}/send:"));
}
