//! Cluster services: state shared by every node. In-process implementations serve a
//! single node; Redis ones serve a cluster. Both pass one contract suite.

use std::sync::Arc;

use crate::async_trait;
use crate::storage::StorageResult;

/// What a server-side session remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    pub user_id: String,
    pub username: String,
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
}

pub type SharedSessionStore = Arc<dyn SessionStore>;
pub type SharedRevocationStore = Arc<dyn RevocationStore>;
