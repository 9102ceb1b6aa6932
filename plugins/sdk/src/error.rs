//! The one error shape of the API: `{message, code}` plus the field for validation errors.
//! The code decides the HTTP status, in one table.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde::Serialize;

/// Every error code the API can return, with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationFailed,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ValidationFailed => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error as the client sees it. `status` overrides the code's status only where
/// HTTP needs a finer answer (405 is reported with code `not_found`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    /// Human-readable explanation; names the field for validation errors.
    pub message: String,
    pub code: ErrorCode,
    /// The offending field, for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Milliseconds until a retry may succeed, for `rate_limited`.
    #[serde(rename = "retryAfterMs", skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(skip)]
    pub status: Option<StatusCode>,
    /// A finer code where a client must act differently than `code` says: a Socket.IO
    /// handshake refusal leads its `connect_error` message with it (`token_expired`:
    /// refresh, then reconnect; DESIGN §4).
    #[serde(skip)]
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            message: message.into(),
            code,
            field: None,
            retry_after_ms: None,
            status: None,
            reason: None,
        }
    }

    /// The code a Socket.IO `connect_error` message starts with: the finer reason if
    /// there is one, else the code.
    pub fn handshake_code(&self) -> &'static str {
        self.reason.unwrap_or(self.code.as_str())
    }
    pub fn validation(field: &str, message: impl std::fmt::Display) -> Self {
        let mut e = Self::new(ErrorCode::ValidationFailed, format!("{field}: {message}"));
        e.field = Some(field.to_owned());
        e
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// An internal failure: the cause goes to the log, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }
    /// The JSON body, for socket acks and `error` events.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl std::error::Error for ApiError {}

impl Scribe for ApiError {
    fn render(self, res: &mut Response) {
        res.status_code(self.status());
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = secs.to_string().parse() {
                res.headers_mut().insert("retry-after", v);
            }
        }
        res.render(Json(self));
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as S;
        match e {
            S::Conflict(m) => ApiError::conflict(m),
            S::NotFound(m) => ApiError::not_found(m),
            S::InvalidCursor(field) => ApiError::validation(&field, "unknown message id"),
            S::Busy => ApiError::unavailable("storage is busy, retry shortly"),
            S::Closed => ApiError::unavailable("server is shutting down"),
            S::Backend(m) => ApiError::internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_snake_case_and_map_to_status() {
        let e = ApiError::validation("username", "must not be empty");
        let v = e.to_json();
        assert_eq!(v["code"], "validation_failed");
        assert_eq!(v["field"], "username");
        assert_eq!(v["message"], "username: must not be empty");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ErrorCode::RateLimited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            serde_json::to_value(ErrorCode::PayloadTooLarge).unwrap(),
            "payload_too_large"
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = ApiError::internal("disk I/O error at /secret/path");
        assert_eq!(e.message, "internal server error");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
