//! The OpenAPI fragment of the auth routes.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    paths(routes::register, routes::login, routes::refresh, routes::me, routes::logout),
    tags((name = "auth", description = "Accounts, sessions and tokens"))
)]
struct AuthApi;

/// The paths, their schemas, and the two security schemes (`cookieAuth` names the
/// configured cookie).
pub fn document(cookie_name: &str) -> utoipa::openapi::OpenApi {
    let mut doc = AuthApi::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearerAuth",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    components.add_security_scheme(
        "cookieAuth",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(cookie_name))),
    );
    // How sockets authenticate, for the AsyncAPI document's handshake, and the events of
    // a socket's credential.
    doc.extensions = Some(utoipa::openapi::extensions::Extensions::from_iter([
        (
            confab_sdk::docs::SOCKET_HANDSHAKE,
            serde_json::json!({
                "auth": {"type": "object", "properties": {"token": {"type": "string",
                    "description": "A JWT from /auth/register or /auth/login (a `Bearer ` prefix is accepted)."}}},
                "security": ["bearerAuth", "cookieAuth"],
                "description": "Authenticate with `auth.token`, an `Authorization: Bearer` header or the session cookie \
                                (the cookie only without an Origin, from the server's own origin or a listed one). \
                                A refusal's connect_error message starts with its code: `token_expired: ...`, \
                                `unauthorized: ...`, `forbidden: ...`, `rate_limited: ...`, `unavailable: ...`.",
            }),
        ),
        ("x-socket-events", socket_events()),
    ]));
    doc
}

fn socket_events() -> serde_json::Value {
    let ended = serde_json::json!({"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": ["logged_out", "revoked", "token_expired"]},
        "message": {"type": "string"}}});
    serde_json::json!({
        "refresh_token": {
            "direction": "client-to-server",
            "summary": "Renew the socket's credential without reconnecting: with a valid token of the same user, \
                        the socket lives as long as that token. Requires an ack.",
            "payload": {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
            "ack": {
                "success": {"type": "object", "required": ["ok", "exp"], "properties": {
                    "ok": {"const": true},
                    "exp": {"type": "integer", "description": "The new expiry, Unix seconds (the JWT's exp)."}}},
                "failure": {"type": "object", "required": ["ok", "error"], "properties": {
                    "ok": {"const": false}, "error": {"$ref": "#/components/schemas/Error"}}},
            },
            "emits": [],
            "errors": ["unauthorized", "forbidden", "validation_failed", "unavailable"],
        },
        "session_ended": {
            "direction": "server-to-client",
            "summary": "The socket's credential ended (logout, revocation, expiry): sent just before the server \
                        disconnects the socket. On `token_expired`, get a new token and reconnect.",
            "payload": ended,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn fragment_has_every_route_schema_and_scheme() {
        let doc: Value = serde_json::to_value(super::document("confab.sid")).unwrap();
        let paths = &doc["paths"];
        for (path, method, statuses) in [
            ("/auth/register", "post", &["201", "400", "409"][..]),
            ("/auth/login", "post", &["200", "400", "401"]),
            ("/auth/me", "get", &["200", "401"]),
            ("/auth/logout", "post", &["204", "401"]),
        ] {
            let op = &paths[path][method];
            assert!(op.is_object(), "{path} {method}: {doc:#}");
            for s in statuses {
                assert!(op["responses"][s].is_object(), "{path} {s}");
            }
        }
        assert_eq!(
            paths["/auth/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/User"
        );
        assert_eq!(
            paths["/auth/login"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        let schemas = &doc["components"]["schemas"];
        for name in ["User", "Error", "AuthResponse", "RegisterRequest", "LoginRequest"] {
            assert!(schemas[name].is_object(), "schema {name}: {schemas:#}");
        }
        assert_eq!(
            schemas["AuthResponse"]["properties"]["user"]["$ref"],
            "#/components/schemas/User"
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
        assert_eq!(schemes["bearerAuth"]["bearerFormat"], "JWT");
        assert_eq!(schemes["cookieAuth"]["in"], "cookie");
        assert_eq!(schemes["cookieAuth"]["name"], "confab.sid");
    }
}
