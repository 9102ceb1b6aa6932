//! The docs plugin: serves the API documents the kernel assembled from the fragments of the
//! enabled plugins (so a disabled plugin's paths and events are absent): `/openapi.json`,
//! `/swagger.yaml` (the same, as YAML), `/asyncapi.json` (the Socket.IO events, derived
//! from the OpenAPI document's `x-socket-events`) and `/docs`, a UI. See docs/api-docs.md.

pub mod asyncapi;
mod config;
mod ui;

use std::sync::{Arc, OnceLock};

use confab_sdk::docs::{self, ApiDocument, AsyncApiRenderer, DOCUMENT_INFO};
use confab_sdk::salvo::http::HeaderValue;
use confab_sdk::salvo::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use confab_sdk::salvo::hyper::body::Bytes;
use confab_sdk::salvo::prelude::*;
use confab_sdk::utoipa::openapi::extensions::Extensions;
use confab_sdk::utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use confab_sdk::utoipa::openapi::server::Server;
use confab_sdk::utoipa::openapi::tag::TagBuilder;
use confab_sdk::utoipa::openapi::{ContentBuilder, OpenApi, OpenApiBuilder, PathsBuilder, ResponseBuilder};
use confab_sdk::{ApiError, BuildError, Plugin, Registrar};
use serde_json::json;

pub use config::{DocsConfig, Ui};

pub struct DocsPlugin;

impl Plugin for DocsPlugin {
    type Config = DocsConfig;
    const NAME: &'static str = "docs";

    fn build(&self, config: DocsConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let docs = Arc::new(Documents {
            doc: reg.require::<ApiDocument>()?,
            ..Documents::default()
        });
        let page = ui::page(&config);
        let csp = HeaderValue::from_str(&page.csp).map_err(|e| BuildError(format!("docs: the page's CSP: {e}")))?;
        reg.openapi(fragment(&config));
        reg.provide(AsyncApiRenderer(Arc::new(asyncapi::asyncapi)))?;
        reg.route(
            Router::new()
                .push(Router::with_path("openapi.json").get(Serve(docs.clone(), Kind::OpenApi)))
                .push(Router::with_path("swagger.yaml").get(Serve(docs.clone(), Kind::Yaml)))
                .push(Router::with_path("asyncapi.json").get(Serve(docs, Kind::AsyncApi)))
                .push(Router::with_path("docs").get(DocsPage { html: page.html, csp })),
        );
        Ok(())
    }
}

/// The documents, rendered on first request (the kernel completes the OpenAPI document
/// only after every plugin is built) and then served from memory.
#[derive(Default)]
struct Documents {
    doc: ApiDocument,
    openapi: OnceLock<Rendered>,
    yaml: OnceLock<Rendered>,
    asyncapi: OnceLock<Rendered>,
}

#[derive(Clone, Copy)]
enum Kind {
    OpenApi,
    Yaml,
    AsyncApi,
}

type Rendered = Result<Bytes, String>;

impl Documents {
    fn get(&self, kind: Kind) -> Option<&Rendered> {
        let doc = self.doc.get()?;
        let cell = match kind {
            Kind::OpenApi => &self.openapi,
            Kind::Yaml => &self.yaml,
            Kind::AsyncApi => &self.asyncapi,
        };
        Some(cell.get_or_init(|| render(doc, kind).map(Bytes::from)))
    }
}

fn render(doc: &OpenApi, kind: Kind) -> Result<String, String> {
    match kind {
        Kind::OpenApi => serde_json::to_string(doc).map_err(|e| e.to_string()),
        Kind::Yaml => docs::to_yaml(doc),
        Kind::AsyncApi => asyncapi::asyncapi(doc).and_then(|a| serde_json::to_string(&a).map_err(|e| e.to_string())),
    }
}

struct Serve(Arc<Documents>, Kind);

#[async_trait]
impl Handler for Serve {
    async fn handle(&self, _req: &mut Request, _depot: &mut Depot, res: &mut Response, _ctrl: &mut FlowCtrl) {
        match self.0.get(self.1) {
            Some(Ok(body)) => {
                let ctype = match self.1 {
                    Kind::Yaml => "application/yaml; charset=utf-8",
                    Kind::OpenApi | Kind::AsyncApi => "application/json; charset=utf-8",
                };
                let h = res.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
                // The document changes only with a restart under another config.
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                res.body(body.clone());
            }
            Some(Err(e)) => res.render(ApiError::internal(format!("cannot render the API document: {e}"))),
            None => res.render(ApiError::unavailable("the API document is still being assembled")),
        }
    }
}

struct DocsPage {
    html: String,
    csp: HeaderValue,
}

#[async_trait]
impl Handler for DocsPage {
    async fn handle(&self, req: &mut Request, _depot: &mut Depot, res: &mut Response, _ctrl: &mut FlowCtrl) {
        // The page loads `openapi.json` relative to itself: from `/docs/` that would miss.
        // A relative redirect keeps a reverse proxy's path prefix.
        if req.uri().path().ends_with('/') {
            res.render(Redirect::permanent("../docs"));
            return;
        }
        // Replaces the kernel's `default-src 'none'`, set before routes run.
        res.headers_mut().insert(CONTENT_SECURITY_POLICY, self.csp.clone());
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res.render(Text::Html(self.html.clone()));
    }
}

/// This plugin's own paths, the document title and, with `public_url`, the server.
fn fragment(config: &DocsConfig) -> OpenApi {
    let get = |id: &str, summary: &str, ctype: &str, description: &str| {
        // The documents are objects, in JSON or YAML; the page is text.
        let schema = if ctype == "text/html" {
            json!({"type": "string"})
        } else {
            json!({"type": "object"})
        };
        let schema = serde_json::from_value(schema).expect("a literal JSON Schema");
        PathItem::new(
            HttpMethod::Get,
            OperationBuilder::new()
                .operation_id(Some(id))
                .summary(Some(summary))
                .tag("docs")
                .response(
                    "200",
                    ResponseBuilder::new().description(description).content(
                        ctype,
                        ContentBuilder::new()
                            .schema(Some::<confab_sdk::utoipa::openapi::RefOr<_>>(schema))
                            .build(),
                    ),
                ),
        )
    };
    let paths = PathsBuilder::new()
        .path(
            "/openapi.json",
            get(
                "openApiJson",
                "This OpenAPI 3.1 document",
                "application/json",
                "The document",
            ),
        )
        .path(
            "/swagger.yaml",
            get(
                "openApiYaml",
                "This OpenAPI 3.1 document as YAML",
                "application/yaml",
                "The document",
            ),
        )
        .path(
            "/asyncapi.json",
            get(
                "asyncApiJson",
                "The AsyncAPI 3.0 document of the Socket.IO events",
                "application/json",
                "Derived from this document's `x-socket-events`",
            ),
        )
        .path(
            "/docs",
            get(
                "docsPage",
                "A browsable reference of this document",
                "text/html",
                "The HTML page",
            ),
        );
    let mut doc = OpenApiBuilder::new()
        .paths(paths)
        .tags(Some(vec![
            TagBuilder::new()
                .name("docs")
                .description(Some("The API documents and their UI"))
                .build(),
        ]))
        .build();
    if !config.public_url.is_empty() {
        doc.servers = Some(vec![Server::new(config.public_url.trim_end_matches('/'))]);
    }
    doc.extensions = Some(Extensions::from_iter([(DOCUMENT_INFO, json!({"title": config.title}))]));
    doc
}

#[cfg(test)]
mod tests {
    use confab_sdk::config::RunProfile;
    use confab_sdk::plugin::{Contributions, DynPlugin};
    use confab_sdk::salvo::test::{ResponseExt, TestClient};
    use confab_sdk::services::Services;
    use serde_json::Value;

    use super::*;

    async fn app(section: Value, doc: Option<OpenApi>) -> Service {
        let profile = RunProfile {
            name: "development".into(),
        };
        let mut services = Services::default();
        let shared = ApiDocument::default();
        services.provide(shared.clone(), "kernel").unwrap();
        let mut out = Contributions::default();
        let parsed = DocsPlugin.parse_config(&section, &profile).unwrap();
        let mut reg = Registrar::new("docs", &profile, &mut services, &mut out);
        DynPlugin::build(&DocsPlugin, &parsed, &mut reg).unwrap();
        if let Some(d) = doc {
            shared.set(d);
        }
        let mut router = Router::new();
        for r in out.routes {
            router = router.push(r);
        }
        Service::new(router)
    }

    fn sample() -> OpenApi {
        let mut d = fragment(&DocsConfig::default());
        d.extensions = Some(Extensions::from_iter([(
            docs::SOCKET_EVENTS,
            json!({"hello": {"direction": "client-to-server", "payload": {"type": "string"}}}),
        )]));
        d
    }

    #[tokio::test]
    async fn serves_the_three_documents_and_the_page() {
        let app = app(json!({}), Some(sample())).await;
        let mut res = TestClient::get("http://localhost/openapi.json").send(&app).await;
        assert_eq!(res.status_code, Some(StatusCode::OK));
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json; charset=utf-8");
        let openapi: Value = res.take_json().await.unwrap();
        assert!(openapi["paths"]["/docs"]["get"].is_object());

        let mut res = TestClient::get("http://localhost/swagger.yaml").send(&app).await;
        assert_eq!(res.headers()[CONTENT_TYPE], "application/yaml; charset=utf-8");
        let yaml = res.take_string().await.unwrap();
        assert!(yaml.contains("openapi: 3.1.0"), "{yaml}");

        let mut res = TestClient::get("http://localhost/asyncapi.json").send(&app).await;
        let asyncapi: Value = res.take_json().await.unwrap();
        assert_eq!(asyncapi["asyncapi"], "3.0.0");
        assert_eq!(asyncapi["operations"]["client.hello"]["action"], "receive");

        let mut res = TestClient::get("http://localhost/docs").send(&app).await;
        assert_eq!(res.status_code, Some(StatusCode::OK));
        assert!(
            res.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src https://cdn.jsdelivr.net")
        );
        assert!(res.take_string().await.unwrap().contains("swagger-ui-bundle.js"));
        let res = TestClient::get("http://localhost/docs/").send(&app).await;
        assert_eq!(res.status_code, Some(StatusCode::PERMANENT_REDIRECT));
        assert_eq!(res.headers()["location"], "../docs");
    }

    #[tokio::test]
    async fn before_assembly_the_documents_are_unavailable_and_bad_events_are_a_500() {
        let app1 = app(json!({}), None).await;
        let res = TestClient::get("http://localhost/openapi.json").send(&app1).await;
        assert_eq!(res.status_code, Some(StatusCode::SERVICE_UNAVAILABLE));

        let mut bad = sample();
        bad.extensions = Some(Extensions::from_iter([(
            docs::SOCKET_EVENTS,
            json!({"x": {"direction": 1}}),
        )]));
        let app2 = app(json!({}), Some(bad)).await;
        let res = TestClient::get("http://localhost/asyncapi.json").send(&app2).await;
        assert_eq!(res.status_code, Some(StatusCode::INTERNAL_SERVER_ERROR));
        let res = TestClient::get("http://localhost/openapi.json").send(&app2).await;
        assert_eq!(res.status_code, Some(StatusCode::OK));
    }

    #[test]
    fn the_fragment_names_the_title_and_server() {
        let f = fragment(&DocsConfig {
            title: "Acme".into(),
            public_url: "https://chat.example.com/".into(),
            ..DocsConfig::default()
        });
        let v = serde_json::to_value(f).unwrap();
        assert_eq!(v["x-document-info"]["title"], "Acme");
        assert_eq!(v["servers"][0]["url"], "https://chat.example.com");
        for p in ["/openapi.json", "/swagger.yaml", "/asyncapi.json", "/docs"] {
            assert_eq!(v["paths"][p]["get"]["tags"][0], "docs", "{p}");
        }
    }
}
