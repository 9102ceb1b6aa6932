//! What the limits add to the OpenAPI document beyond the `x-rate-limits` extension of
//! the fragment: a 429 response on every operation some limit applies to.

use confab_sdk::docs::build::schema_ref;
use confab_sdk::serde_json::{Map, Value};
use confab_sdk::utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};

/// A 429 on every operation some limit applies to, describing the limits.
pub(crate) fn add_rate_limited(doc: &mut OpenApi, limits: &Map<String, Value>) {
    for (target, rules) in limits {
        let Some((method, path)) = target.split_once(' ') else {
            continue;
        };
        let Some(item) = doc.paths.paths.get_mut(path) else {
            continue;
        };
        let op = match method {
            "GET" => item.get.as_mut(),
            "POST" => item.post.as_mut(),
            "PUT" => item.put.as_mut(),
            "PATCH" => item.patch.as_mut(),
            "DELETE" => item.delete.as_mut(),
            _ => None,
        };
        let Some(op) = op else { continue };
        let mut r = ResponseBuilder::new()
            .description(format!(
                "Rate limited (`rate_limited`, `retryAfterMs`; `Retry-After` and `RateLimit-*` headers): {rules}"
            ))
            .build();
        r.content.insert(
            "application/json".into(),
            ContentBuilder::new().schema(Some(schema_ref("Error"))).build(),
        );
        op.responses.responses.insert("429".into(), RefOr::T(r));
    }
}
