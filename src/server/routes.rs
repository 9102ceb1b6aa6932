//! The kernel's own routes (`/health`, `/ready`, `/metrics`) and the JSON error catcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use confab_sdk::error::{ApiError, ErrorCode};
use confab_sdk::health::HealthCheck;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Map, Value, json};

use crate::metrics::Metrics;

#[handler]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `/ready`: every check must pass, and the node must not be draining for shutdown.
pub struct Ready {
    pub checks: Vec<Arc<dyn HealthCheck>>,
    pub draining: Arc<AtomicBool>,
}

#[async_trait]
impl Handler for Ready {
    async fn handle(&self, _req: &mut Request, _depot: &mut Depot, res: &mut Response, _ctrl: &mut FlowCtrl) {
        let results = futures_util::future::join_all(self.checks.iter().map(|c| async move {
            let r = tokio::time::timeout(std::time::Duration::from_secs(2), c.check())
                .await
                .unwrap_or_else(|_| Err("timed out after 2 s".into()));
            (c.name().to_owned(), r)
        }))
        .await;
        // Anyone may ask: the answer says which check fails, never why (backend addresses
        // and error texts go to the log only).
        let mut checks = Map::new();
        let mut failing = Vec::new();
        for (name, r) in results {
            match r {
                Ok(()) => checks.insert(name, json!("ok")),
                Err(e) => {
                    tracing::warn!(check = %name, error = %e, "readiness check failing");
                    failing.push(name.clone());
                    checks.insert(name, json!("failing"))
                }
            };
        }
        if self.draining.load(Ordering::Relaxed) {
            failing.push("server".into());
            checks.insert("server".into(), json!("shutting down"));
        }
        if failing.is_empty() {
            res.render(Json(json!({"status": "ok", "checks": checks})));
        } else {
            res.status_code(StatusCode::SERVICE_UNAVAILABLE);
            res.render(Json(json!({
                "status": "unavailable",
                "code": ErrorCode::Unavailable,
                "message": format!("not ready: {} failing (details in the server log)", failing.join(", ")),
                "checks": checks,
            })));
        }
    }
}

pub struct MetricsRoute(pub Arc<Metrics>);

#[async_trait]
impl Handler for MetricsRoute {
    async fn handle(&self, _req: &mut Request, _depot: &mut Depot, res: &mut Response, _ctrl: &mut FlowCtrl) {
        res.add_header("content-type", "text/plain; version=0.0.4; charset=utf-8", true)
            .ok();
        res.render(self.0.render());
    }
}

/// Turns every error response without a body (404, 405, 413 from salvo, ...) into the
/// JSON error format.
#[handler]
pub async fn json_errors(req: &mut Request, res: &mut Response, ctrl: &mut FlowCtrl) {
    let status = res.status_code.unwrap_or(StatusCode::NOT_FOUND);
    let path = req.uri().path().to_owned();
    let err = match status {
        StatusCode::NOT_FOUND => ApiError::not_found(format!("no route for {} {path}", req.method())),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::NotFound,
            format!("method {} is not allowed on {path}", req.method()),
        )
        .with_status(status),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::validation("content-type", "unsupported media type").with_status(status)
        }
        s if s.is_server_error() => ApiError::new(ErrorCode::Internal, "internal server error").with_status(s),
        s => ApiError::new(
            ErrorCode::ValidationFailed,
            s.canonical_reason().unwrap_or("bad request").to_lowercase(),
        )
        .with_status(s),
    };
    res.render(err);
    ctrl.skip_rest();
}
