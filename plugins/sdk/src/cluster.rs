//! Cluster services: state shared by every node. In-process implementations serve a
//! single node; Redis ones serve a cluster. Both pass one contract suite.

use std::sync::Arc;
use std::time::Duration;

use crate::async_trait;
use crate::storage::StorageResult;
use crate::time::Timestamp;

/// What a server-side session remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    pub user_id: String,
    pub username: String,
    /// The token minted by the same login (its `jti`, and until when it is accepted, in
    /// unix seconds): a logout by cookie revokes it too.
    pub token: Option<(String, i64)>,
    /// The login's refresh token family: a logout by cookie ends it too.
    pub family: Option<String>,
}

/// Server-side sessions with an absolute lifetime and an idle timeout.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a session with a fresh random id and returns the id.
    async fn create(&self, data: SessionData, absolute_secs: u64, idle_secs: u64) -> StorageResult<String>;
    /// The live session, if any; a hit extends the idle timeout (never past the absolute one).
    async fn get(&self, id: &str) -> StorageResult<Option<SessionData>>;
    async fn delete(&self, id: &str) -> StorageResult<()>;
}

/// Revoked token ids (JWT `jti`), remembered until the token would have expired anyway.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    async fn revoke(&self, jti: &str, until_unix_secs: i64) -> StorageResult<()>;
    async fn is_revoked(&self, jti: &str) -> StorageResult<bool>;
    /// Whether any of `ids` is revoked (a token and its login's family at once: one
    /// round trip where the store is remote).
    async fn any_revoked(&self, ids: &[&str]) -> StorageResult<bool> {
        for id in ids {
            if self.is_revoked(id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Who a refresh token family belongs to. One family per login: every token rotated from
/// the login's first one belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    pub family: String,
    pub user_id: String,
    pub username: String,
}

/// What spending a refresh token gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live and is spent now; `next` replaces it. Presented again within
    /// the grace, it answers the same `next` (two tabs refreshing at once).
    Rotated { next: String, grant: RefreshGrant },
    /// Presented again after the grace: a stolen token is being replayed, or the client
    /// lost its successor. The whole family is revoked now; the caller ends what it
    /// issued from it (`user_id`'s).
    Reused { family: String, user_id: String },
    /// Unknown, malformed, expired, or of a revoked family.
    Invalid,
}

/// Refresh tokens: opaque (`<family>.<secret>`), kept hashed, rotated on every use, with
/// the family's absolute lifetime from its first token.
#[async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    /// A new family's first token, valid for `ttl_secs`.
    async fn issue(&self, user_id: &str, username: &str, ttl_secs: u64) -> StorageResult<(String, RefreshGrant)>;
    /// Spends `token` (see [`Rotation`]); `grace_secs` at least 1.
    async fn rotate(&self, token: &str, grace_secs: u64) -> StorageResult<Rotation>;
    /// Ends a family: none of its tokens rotates any more.
    async fn revoke_family(&self, family: &str) -> StorageResult<()>;
}

pub type SharedRefreshStore = Arc<dyn RefreshStore>;

/// A refresh token's family and the SHA-256 (hex) of its secret part, which is what the
/// stores keep; `None` for anything not shaped like a token.
pub fn refresh_parts(token: &str) -> Option<(&str, String)> {
    use sha2::Digest;
    let (family, secret) = token.split_once('.')?;
    let hex = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(family) || !hex(secret) {
        return None;
    }
    let digest = sha2::Sha256::digest(secret.as_bytes());
    Some((family, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

/// A fresh token of `family`.
pub fn new_refresh_token(family: &str) -> String {
    format!("{family}.{}", crate::ids::random_token())
}

pub type SharedSessionStore = Arc<dyn SessionStore>;
pub type SharedRevocationStore = Arc<dyn RevocationStore>;

/// Whether a user is online (at least one socket connected on any node) and when their
/// last socket closed. Serialized as the API shows it: `{userId, online, lastSeen}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Presence)]
pub struct PresenceState {
    #[serde(rename = "userId")]
    pub user_id: String,
    pub online: bool,
    /// When the user's last socket closed (RFC 3339); `null` if never seen offline since
    /// the cluster state began. Kept while the user is online again.
    #[serde(rename = "lastSeen", with = "crate::time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<Timestamp>,
}

impl PresenceState {
    pub fn online(user_id: &str, last_seen: Option<Timestamp>) -> Self {
        PresenceState {
            user_id: user_id.to_owned(),
            online: true,
            last_seen,
        }
    }
    pub fn offline(user_id: &str, last_seen: Option<Timestamp>) -> Self {
        PresenceState {
            user_id: user_id.to_owned(),
            online: false,
            last_seen,
        }
    }
}

/// Who is online, across the cluster. Each node counts the sockets connected to it; a
/// user is online while any live node counts one. A node that stops without closing its
/// sockets stops heart-beating, and its users turn offline once its entries expire.
///
/// Callers must make the calls for one user in the order the sockets connected and
/// closed (the presence plugin queues them per user); a store applies them as they come.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Counts one more socket of `user_id` on this node. Returns the new state when this
    /// made the user online (no socket anywhere before).
    async fn connected(&self, user_id: &str) -> StorageResult<Option<PresenceState>>;
    /// Counts one socket of `user_id` less on this node. Returns the new state (offline,
    /// `last_seen` now) when that was the user's last socket anywhere.
    async fn disconnected(&self, user_id: &str) -> StorageResult<Option<PresenceState>>;
    /// The current states, in the order asked.
    async fn states(&self, user_ids: &[String]) -> StorageResult<Vec<PresenceState>>;
    /// How often [`PresenceStore::sweep`] must run; `None` when there is nothing to sweep
    /// (a single node).
    fn sweep_interval(&self) -> Option<Duration>;
    /// Heart-beats for this node and expires the entries of nodes that stopped doing so.
    /// Returns the states that changed because of it (users of dead nodes now offline;
    /// this node's users again online after the backend lost its data), each change
    /// reported by one node only.
    async fn sweep(&self) -> StorageResult<Vec<PresenceState>>;
}

pub type SharedPresenceStore = Arc<dyn PresenceStore>;
