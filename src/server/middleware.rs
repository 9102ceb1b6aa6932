//! HTTP middleware run on every request, matched or not: request id and access log,
//! metrics, security headers, CORS, and the body size limit.

use std::sync::Arc;
use std::time::Instant;

use confab_sdk::ids::random_token;
use salvo::http::header::{self, HeaderValue};
use salvo::http::{Method, StatusCode};
use salvo::prelude::*;
use tracing::Instrument;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// Assigns a request id (kept from `X-Request-Id` when it is sane), logs the request
/// inside a span carrying it, and records metrics.
pub struct RequestContext {
    pub metrics: Option<Arc<Metrics>>,
    pub body_limit: usize,
}

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
        .then(|| s.to_owned())
}

#[async_trait]
impl Handler for RequestContext {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        let started = Instant::now();
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(sane_request_id)
            .unwrap_or_else(random_token);
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert("x-request-id", v);
        }
        req.set_secure_max_size(self.body_limit);
        let span = tracing::info_span!("http", request_id = %id, method = %req.method(), path = %req.uri().path());
        ctrl.call_next(req, depot, res).instrument(span.clone()).await;
        let status = res.status_code.unwrap_or(StatusCode::OK).as_u16();
        let elapsed = started.elapsed();
        span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request"));
        if let Some(m) = &self.metrics {
            let route = req.matched_path();
            let route = if route.is_empty() {
                "unmatched".to_owned()
            } else {
                format!("/{route}")
            };
            m.http(&route, req.method().as_str(), status, elapsed);
        }
    }
}

/// Headers every response carries. A route may replace them (the docs page needs scripts).
pub struct SecurityHeaders {
    pub hsts: bool,
}

#[async_trait]
impl Handler for SecurityHeaders {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        let h = res.headers_mut();
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
        h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-site"));
        if self.hsts {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
        ctrl.call_next(req, depot, res).await;
    }
}

/// CORS from `[server.cors]`. Preflights are answered here without reaching the routes.
pub struct Cors {
    any: bool,
    origins: Vec<String>,
    credentials: bool,
    max_age: String,
    expose: HeaderValue,
}

impl Cors {
    /// `exposed`: the plugins' readable response headers, beside the kernel's request id.
    pub fn new(config: &ServerConfig, exposed: &[&str]) -> Self {
        let expose = std::iter::once("x-request-id")
            .chain(exposed.iter().copied())
            .collect::<Vec<_>>()
            .join(", ");
        let any = config.cors.allowed_origins.iter().any(|o| o == "*");
        Cors {
            any,
            origins: config
                .cors
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
            // A wildcard with credentials would let any site act as the user: never.
            credentials: config.cors.allow_credentials && !any,
            max_age: config.cors.max_age_secs.to_string(),
            expose: HeaderValue::from_str(&expose).unwrap_or(HeaderValue::from_static("x-request-id")),
        }
    }

    fn allowed(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }
}

#[async_trait]
impl Handler for Cors {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        res.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| self.allowed(o)) else {
            ctrl.call_next(req, depot, res).await;
            return;
        };
        let h = res.headers_mut();
        let allow = if self.any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("null"))
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
        let preflight =
            req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            ctrl.call_next(req, depot, res).await;
            return;
        }
        let requested = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            requested.unwrap_or(HeaderValue::from_static("authorization, content-type")),
        );
        if let Ok(v) = HeaderValue::from_str(&self.max_age) {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v);
        }
        res.status_code(StatusCode::NO_CONTENT);
        ctrl.skip_rest();
    }
}
