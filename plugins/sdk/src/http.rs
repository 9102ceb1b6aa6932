//! Helpers for plugin HTTP handlers: JSON bodies with field-named errors, credentials
//! from headers.

use salvo::http::{HeaderMap, ParseError};
use salvo::prelude::*;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// Reads and parses a JSON body. The size limit is the request's `secure_max_size`,
/// which the kernel sets from `server.body_limit`.
pub async fn json_body<T: DeserializeOwned>(req: &mut Request) -> Result<T, ApiError> {
    let bytes = match req.payload().await {
        Ok(b) => b.clone(),
        Err(ParseError::PayloadTooLarge) => {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large"));
        }
        Err(e) => return Err(ApiError::validation("body", e)),
    };
    parse_json(&bytes)
}

/// Parses JSON bytes into `T`; errors name the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation("body", "a JSON body is required"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::validation("body", format!("malformed JSON: {inner}"));
        }
        let path = e.path().to_string();
        let msg = strip_position(&inner.to_string());
        let field = if path == "." {
            missing_field(&msg).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::validation(&field, msg)
    })
}

/// Parses a JSON value (a socket payload) into `T`, naming the offending field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        let field = if path == "." {
            missing_field(&msg).unwrap_or_else(|| "payload".to_owned())
        } else {
            path
        };
        ApiError::validation(&field, msg)
    })
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name` from the `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        username: String,
        age: u8,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"username": 5, "age": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("username"));
        let e = parse_json::<Body>(br#"{"age": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("username"));
        let e = parse_json::<Body>(br#"{"username": "a", "age": 1"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert!(e.message.contains("malformed JSON"), "{}", e.message);
        let e = parse_json::<Body>(b"  ").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
    }

    #[test]
    fn reads_bearer_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        h.append("cookie", "a=1; confab.sid=xyz".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc.def"));
        assert_eq!(cookie(&h, "confab.sid"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }
}

/// Browser origins allowed to use cookie authentication besides the server's own: the
/// kernel's `server.cors.allowed_origins` without `*` (a wildcard never vouches for a
/// cookie). Provided by the kernel.
#[derive(Clone, Debug, Default)]
pub struct CookieOrigins(pub std::sync::Arc<Vec<String>>);

impl CookieOrigins {
    /// Whether a cookie may authenticate this request: no `Origin` (not a browser's
    /// cross-site request), the server's own origin (the `Host` it was sent to), or a
    /// listed one. Token authentication does not ask: a page cannot attach a token it
    /// does not have.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
            return true;
        };
        if self.0.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let own = headers.get("host").and_then(|v| v.to_str().ok());
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        matches!((own, authority), (Some(h), Some(a)) if h.eq_ignore_ascii_case(a))
    }
}
