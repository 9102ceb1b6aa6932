//! Storage: users, messages and read cursors. Two backends implement these traits
//! (SQLite embedded, MongoDB in production) and pass one contract suite.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::async_trait;
use crate::time::Timestamp;

/// The largest write queue (`queue_capacity`) a backend accepts.
pub const MAX_WRITE_QUEUE: usize = 1 << 24;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StorageError {
    /// A uniqueness rule was broken (e.g. the username is taken).
    #[error("{0}")]
    Conflict(String),
    /// Something the write refers to does not exist (e.g. the receiver).
    #[error("{0}")]
    NotFound(String),
    /// A paging cursor names no message of this conversation; holds the parameter name.
    #[error("unknown cursor in {0}")]
    InvalidCursor(String),
    /// The write queue is full: back off and retry.
    #[error("storage is busy")]
    Busy,
    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A user account. `password_hash` never leaves the server.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user as clients see it: `{id, username, displayName}`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct PublicUser {
    pub id: String,
    pub username: String,
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
}

impl From<&UserRecord> for PublicUser {
    fn from(u: &UserRecord) -> Self {
        PublicUser {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: Option<String>,
    pub password_hash: String,
}

/// A stored message, serialized exactly as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct Message {
    /// 24-hex id; also the paging cursor.
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "senderId")]
    pub sender_id: String,
    #[serde(rename = "receiverId")]
    pub receiver_id: String,
    pub message: String,
    #[serde(rename = "clientMsgId", skip_serializing_if = "Option::is_none", default)]
    pub client_msg_id: Option<String>,
    /// RFC 3339 UTC with milliseconds.
    #[serde(rename = "createdAt", with = "crate::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(rename = "updatedAt", with = "crate::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The message's position in the stream of the user it is shown to (1, 2, 3, ... per
    /// user, in commit order): a client that holds every position up to `last` applies
    /// `last + 1`, ignores smaller ones and fills a gap with `sync {afterPos: last}`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pos: Option<u64>,
    /// Its positions in the sender's and the receiver's streams (equal for a note to
    /// self), as stored; [`Message::seen_by`] picks one as `pos`. `None` for a message
    /// stored before streams existed and not migrated yet.
    #[serde(skip)]
    pub positions: Option<(u64, u64)>,
}

impl Message {
    /// This message as `user` is shown it: `pos` is its position in `user`'s stream.
    pub fn seen_by(mut self, user: &str) -> Message {
        self.pos = self.pos_for(user);
        self
    }

    /// This message's position in `user`'s stream, if it has positions.
    pub fn pos_for(&self, user: &str) -> Option<u64> {
        self.positions
            .map(|(sender, receiver)| if user == self.receiver_id { receiver } else { sender })
    }
}

/// A page of one user's stream (`sync {afterPos}`), read from one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPage {
    /// Oldest first, in stream order.
    pub messages: Vec<Message>,
    /// More positions follow the last one returned.
    pub has_more: bool,
    /// The last position of the stream at that moment (0 for an empty stream).
    pub head_pos: u64,
}

impl StreamPage {
    /// The page of `user`'s stream made of the two halves a backend reads (the messages
    /// `user` sent and those it received, each at most `limit + 1` past the cursor).
    pub fn from_halves(user: &str, mut messages: Vec<Message>, limit: usize, head_pos: u64) -> StreamPage {
        messages.sort_by_key(|m| m.pos_for(user));
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        StreamPage {
            messages,
            has_more,
            head_pos,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender_id: String,
    pub receiver_id: String,
    pub message: String,
    pub client_msg_id: Option<String>,
}

/// The result of an insert: the stored message, and whether this call created it
/// (false when `(sender, clientMsgId)` was already stored: an idempotent repeat).
#[derive(Debug, Clone)]
pub struct Inserted {
    pub message: Message,
    pub created: bool,
}

/// One page of a conversation. With neither cursor: the newest `limit` messages. With
/// `before`: the `limit` messages just older than it. With `after`: the `limit` messages
/// just newer than it (and older than `before` if both are given). Always oldest first.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub before: Option<String>,
    pub after: Option<String>,
    pub limit: usize,
}

/// A conversation in a user's list.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Conversation)]
pub struct Conversation {
    /// The other user's id.
    pub partner: String,
    #[serde(rename = "lastMessage")]
    pub last_message: Message,
    #[serde(rename = "lastAt", with = "crate::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_at: Timestamp,
    /// Messages from the partner newer than my read cursor. The embedded SQLite backend
    /// looks at the 10,000 newest messages after the cursor at most, so a larger backlog
    /// reads as a lower bound.
    pub unread: u64,
}

/// How far `user` has read the messages `partner` sent them.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ReadState)]
pub struct ReadState {
    #[serde(rename = "userId")]
    pub user_id: String,
    #[serde(rename = "withUser")]
    pub partner_id: String,
    /// The newest message read (`null` if nothing was read yet).
    #[serde(rename = "upTo")]
    pub up_to: Option<String>,
    #[serde(rename = "readAt", with = "crate::time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub read_at: Option<Timestamp>,
    pub unread: u64,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user; `Conflict` if the username is taken (compared case-insensitively).
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord>;
    async fn user_by_id(&self, id: &str) -> StorageResult<Option<UserRecord>>;
    /// Case-insensitive lookup.
    async fn user_by_username(&self, username: &str) -> StorageResult<Option<UserRecord>>;
    async fn set_password_hash(&self, id: &str, hash: &str) -> StorageResult<()>;
    /// This deployment's random secret (256 bits, hex): created by the first caller and
    /// kept with the storage (owner-only), so every node sharing the storage, and every
    /// restart, gets the same one, and two nodes asking at once agree.
    async fn deployment_secret(&self) -> StorageResult<String>;
}

/// The deployment secret, read by the kernel at boot (see
/// [`UserStore::deployment_secret`]): what signs tokens when no JWT secret is configured.
#[derive(Clone)]
pub struct DeploymentSecret(pub String);

impl std::fmt::Debug for DeploymentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentSecret(***)")
    }
}

#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a message durably. The message takes its place in its pair's order when this
    /// is *called* (the future only waits for the commit), so callers that call in send
    /// order get send order. `NotFound` if the receiver does not exist.
    fn insert(&self, message: NewMessage) -> BoxFuture<'static, StorageResult<Inserted>>;
    /// A page of the conversation between `a` and `b`, oldest first.
    async fn history(&self, a: &str, b: &str, page: PageQuery) -> StorageResult<Vec<Message>>;
    /// Messages to or from `user` after the cursor (all if `None`), oldest first, at most
    /// `limit`; the flag says whether more follow.
    async fn since(&self, user: &str, after: Option<&str>, limit: usize) -> StorageResult<(Vec<Message>, bool)>;
    /// `user`'s stream after position `after_pos`, at most `limit` messages (none with a
    /// `limit` of 0: just the head), and the head, from one snapshot.
    async fn stream(&self, user: &str, after_pos: u64, limit: usize) -> StorageResult<StreamPage>;
    /// `user`'s conversations, newest first (by their newest message), at most `limit`.
    /// With `before` (the `_id` of a conversation's newest message, usually the last one of
    /// the previous page), only conversations whose newest message is older than it.
    /// `InvalidCursor("before")` if `before` is not a message to or from `user`.
    async fn conversations(&self, user: &str, before: Option<&str>, limit: usize) -> StorageResult<Vec<Conversation>>;
    /// Moves `user`'s read cursor for `partner` forward to `up_to` (default: the newest
    /// message). It never moves back. `InvalidCursor("upTo")` if `up_to` is not a message
    /// of this conversation.
    async fn mark_read(&self, user: &str, partner: &str, up_to: Option<&str>) -> StorageResult<ReadState>;
    /// Checks that the store answers (for `/ready`).
    async fn ping(&self) -> StorageResult<()>;
    /// Finishes queued writes and stops accepting new ones.
    async fn close(&self);
}

/// One record of a [`StateStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key: String,
    pub value: String,
    /// Unix milliseconds after which the record is gone.
    pub expires_ms: i64,
}

/// Small records with an expiry, kept with the storage: the in-process cluster backend's
/// sessions, revocations and refresh families, so that a restart of a single node forgets
/// none of them (a logged-out token must not come back). Records are grouped by `kind`;
/// every write is durable when it returns.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Writes `key` of `kind` (replacing it), kept until `expires_ms`.
    async fn put_state(&self, kind: &str, key: &str, value: &str, expires_ms: i64) -> StorageResult<()>;
    async fn delete_state(&self, kind: &str, key: &str) -> StorageResult<()>;
    /// Every record of `kind` that has not expired at `now_ms`.
    async fn load_state(&self, kind: &str, now_ms: i64) -> StorageResult<Vec<StateEntry>>;
}

pub type SharedUserStore = Arc<dyn UserStore>;
pub type SharedMessageStore = Arc<dyn MessageStore>;
pub type SharedStateStore = Arc<dyn StateStore>;

/// The faces of one opened storage backend (one object behind all three).
#[derive(Clone)]
pub struct Stores {
    pub users: SharedUserStore,
    pub messages: SharedMessageStore,
    pub state: SharedStateStore,
}

impl Stores {
    /// The three faces of one store.
    pub fn of<S: UserStore + MessageStore + StateStore>(store: Arc<S>) -> Self {
        Stores {
            users: store.clone(),
            messages: store.clone(),
            state: store,
        }
    }
}

/// Told after each commit the number of writes it held and how long it took (from `BEGIN`
/// to the end of `COMMIT`), by a backend that groups writes; the kernel keeps both as
/// metrics.
pub type CommitObserver = Arc<dyn Fn(usize, std::time::Duration) + Send + Sync>;
