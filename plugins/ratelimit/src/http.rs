//! The REST side: a hoop that checks the rules of the matched route before its handler.
//! Admitted responses carry the `RateLimit-*` headers of the tightest rule; refused ones
//! are 429 `rate_limited` with `Retry-After` as well.

use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::error::ErrorCode;
use confab_sdk::net::{ClientIp, limit_key};
use confab_sdk::ratelimit::Decision;
use confab_sdk::salvo::http::{HeaderValue, ParseError};
use confab_sdk::salvo::prelude::*;
use confab_sdk::serde_json::Value;

use crate::config::KeyKind;
use crate::limiter::Limiter;

pub(crate) struct Hoop(pub Arc<Limiter>);

/// The response headers this side sends (browsers may read them cross-origin).
pub(crate) const HEADERS: [&str; 4] = [
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

fn set_headers(res: &mut Response, d: &Decision) {
    let h = res.headers_mut();
    for (name, v) in [
        (HEADERS[1], d.limit),
        (HEADERS[2], d.remaining),
        (HEADERS[3], d.reset_after_ms.div_ceil(1000)),
    ] {
        h.insert(name, HeaderValue::from(v));
    }
}

/// The `username` field of a JSON body, normalized as the auth plugin compares names.
/// The body stays cached for the handler; a body that cannot be read is answered here as
/// the handler would (it could not read it a second time).
async fn username(req: &mut Request) -> Result<Option<String>, ApiError> {
    let bytes = match req.payload().await {
        Ok(b) => b,
        Err(ParseError::PayloadTooLarge) => {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large"));
        }
        Err(e) => return Err(ApiError::validation("body", e)),
    };
    let Ok(v) = confab_sdk::serde_json::from_slice::<Value>(bytes) else {
        return Ok(None);
    };
    let name = v
        .get("username")
        .and_then(Value::as_str)
        .map(|n| n.trim().to_lowercase());
    Ok(name.filter(|n| !n.is_empty()))
}

#[async_trait]
impl Handler for Hoop {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        let limiter = &self.0;
        let Some(idxs) = limiter.for_route(req.method().as_str(), req.matched_path()) else {
            ctrl.call_next(req, depot, res).await;
            return;
        };
        let mut tightest: Option<Decision> = None;
        // Authenticated once for every per-user rule of the route; failures are left to
        // the handler, which answers 401.
        let mut user: Option<Option<String>> = None;
        for &idx in idxs {
            let who = match limiter.rules[idx].key {
                // The kernel resolved the client (server.trusted_proxies); the peer stands
                // in where no kernel ran (in-process handler tests).
                KeyKind::Ip => ClientIp::of(req)
                    .map(|c| c.limit_key())
                    .or_else(|| req.remote_addr().clone().into_std().map(|a| limit_key(a.ip())))
                    .map(|ip| ip.to_string()),
                KeyKind::Username => match username(req).await {
                    Ok(name) => name.map(|u| format!("n:{u}")),
                    Err(e) => {
                        res.render(e);
                        ctrl.skip_rest();
                        return;
                    }
                },
                KeyKind::User => {
                    if user.is_none() {
                        user = Some(match limiter.auth.get() {
                            Some(auth) => auth
                                .authenticate(req.headers())
                                .await
                                .ok()
                                .map(|p| p.user_id().to_owned()),
                            None => None,
                        });
                    }
                    user.clone().flatten()
                }
            };
            let Some(who) = who else { continue };
            let Some(d) = limiter.check(&[idx], &who).await.and_then(|d| d.first().copied()) else {
                continue;
            };
            if !d.allowed {
                set_headers(res, &d);
                res.render(limiter.refused(idx, &d));
                ctrl.skip_rest();
                return;
            }
            if tightest.is_none_or(|t| d.remaining < t.remaining) {
                tightest = Some(d);
            }
        }
        if let Some(d) = tightest {
            set_headers(res, &d);
        }
        ctrl.call_next(req, depot, res).await;
    }
}
