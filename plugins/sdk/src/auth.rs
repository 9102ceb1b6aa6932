//! Who is calling. The auth plugin provides an [`Authenticator`]; other plugins use it
//! for their routes and read the socket's [`Principal`] from the realtime context.

use std::sync::Arc;

use salvo::http::HeaderMap;

use crate::async_trait;
use crate::error::ApiError;

/// An authenticated user, as established by a token or a session.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    /// The session this request or socket came in with, if it used the cookie.
    pub session_id: Option<String>,
    /// The JWT id and expiry (unix seconds), if it used a token.
    pub token: Option<(String, i64)>,
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates a REST request from its headers (Bearer token or session cookie).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError>;
    /// Authenticates a socket handshake: `auth.token`, then the headers.
    async fn authenticate_socket(&self, auth: &serde_json::Value, headers: &HeaderMap) -> Result<Principal, ApiError>;
}

pub type SharedAuthenticator = Arc<dyn Authenticator>;
