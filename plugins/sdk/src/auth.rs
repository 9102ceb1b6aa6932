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
    /// When the credential stops being accepted (unix seconds; a token's `exp` plus the
    /// leeway): a socket opened with it is ended then, unless it was rebound to a newer
    /// credential first (`refresh_token`). `None`: until revoked (a session).
    pub expires_at: Option<i64>,
    /// The refresh token family of the login the token came from.
    pub family: Option<String>,
}

/// Rooms of the sockets a credential opened, so that revoking it ends exactly those
/// sockets, on every node: the login's refresh token family (`cred:fam:<family>`), or the
/// token (`cred:jti:<jti>`) when it has no family, and the session (`cred:sid:<id>`).
/// A token with a family joins only the family's room: every revocation of such a token
/// (a logout, by Bearer or by cookie) revokes its family too, which ends the same sockets,
/// and each room a socket joins costs it about 250 bytes for its life (docs/kernel.md,
/// "Memory per idle socket"). The kernel joins a socket to its principal's rooms.
pub fn credential_rooms(p: &Principal) -> Vec<String> {
    let mut rooms = Vec::with_capacity(2);
    if let Some((jti, _)) = &p.token {
        rooms.push(token_sockets_room(jti, p.family.as_deref()));
    }
    if let Some(sid) = &p.session_id {
        rooms.push(session_room(sid));
    }
    rooms
}

/// The room of the sockets opened with token `jti` of refresh family `family` (see
/// [`credential_rooms`]): its family's, which holds the other tokens' of the same login
/// too, or its own when it has none.
pub fn token_sockets_room(jti: &str, family: Option<&str>) -> String {
    match family {
        Some(family) => family_room(family),
        None => token_room(jti),
    }
}

pub fn family_room(family: &str) -> String {
    format!("cred:fam:{family}")
}

pub fn token_room(jti: &str) -> String {
    format!("cred:jti:{jti}")
}

pub fn session_room(session_id: &str) -> String {
    format!("cred:sid:{session_id}")
}

/// Why a socket was ended (`session_ended {code, message}`, DESIGN §4).
pub mod ended {
    pub const EVENT: &str = "session_ended";
    pub const LOGGED_OUT: &str = "logged_out";
    pub const REVOKED: &str = "revoked";
    pub const TOKEN_EXPIRED: &str = "token_expired";
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates a REST request from its headers (Bearer token or session cookie).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError>;
    /// Authenticates a socket handshake: `auth.token`, then the headers.
    async fn authenticate_socket(&self, auth: &serde_json::Value, headers: &HeaderMap) -> Result<Principal, ApiError>;
    /// Whether `principal`'s credential still stands, asked for every socket of a node
    /// that may have missed a revocation (it was cut off from the cluster backend).
    /// `Ok(None)`: it does; `Ok(Some(code))`: end its sockets with that [`ended`] code;
    /// an error: unknown for now (the kernel asks again on the next recovery).
    async fn recheck(&self, principal: &Principal) -> Result<Option<&'static str>, ApiError>;
}

pub type SharedAuthenticator = Arc<dyn Authenticator>;
