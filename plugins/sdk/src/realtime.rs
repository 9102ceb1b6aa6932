//! The realtime API plugins use. It hides socketioxide's adapter type so the same plugin
//! code runs on the local adapter and on the Redis one.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use salvo::http::HeaderMap;
use serde_json::Value;

use crate::async_trait;
use crate::auth::{CredentialId, Principal};
use crate::error::ApiError;

/// The room every socket of a user joins; emits to a user go through it, so they reach
/// the user's sockets on every node once the cluster adapter carries rooms across nodes.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// Operations on one connected socket, implemented by the kernel.
pub trait SocketOps: Send + Sync + 'static {
    fn id(&self) -> String;
    /// Emits to this socket only. Returns false when the socket is closed or its buffer is
    /// full: a slow client loses that emit instead of making the server wait.
    fn emit(&self, event: &str, data: &Value) -> bool;
    fn join(&self, room: &str);
    fn leave(&self, room: &str);
    fn disconnect(&self, reason: &str);
    /// The socket now lives as long as `principal` (same user, a newer credential): it
    /// leaves the old credential's rooms, joins the new one's, and its expiry moves.
    fn rebind(&self, principal: Principal);
}

/// What an event handler gets: the socket and who is on it.
#[derive(Clone)]
pub struct SocketCtx {
    pub socket: Arc<dyn SocketOps>,
    /// `None` only when no plugin authenticates sockets (auth disabled).
    pub principal: Option<Arc<Principal>>,
}

impl SocketCtx {
    /// The authenticated user, or the `unauthorized` error to send back.
    pub fn user(&self) -> Result<&Principal, ApiError> {
        self.principal
            .as_deref()
            .ok_or_else(|| ApiError::unauthorized("this socket is not authenticated"))
    }
}

/// The ack callback of one event. Clients of the old backend send no ack: then
/// [`Ack::wanted`] is false and handlers report errors through an `error` event instead.
pub struct Ack(Option<Box<dyn FnOnce(Value) + Send>>);

impl Ack {
    pub fn new(send: Option<Box<dyn FnOnce(Value) + Send>>) -> Self {
        Ack(send)
    }
    pub fn none() -> Self {
        Ack(None)
    }
    pub fn wanted(&self) -> bool {
        self.0.is_some()
    }
    pub fn send(self, value: Value) {
        if let Some(f) = self.0 {
            f(value)
        }
    }
    /// Acks with `{ok:false, error}` if an ack was asked for, else emits `error` on the socket.
    pub fn fail(self, ctx: &SocketCtx, error: &ApiError) {
        if self.wanted() {
            self.send(serde_json::json!({"ok": false, "error": error.to_json()}));
        } else {
            ctx.socket.emit("error", &error.to_json());
        }
    }
}

/// An event handler. It is called in the order the socket's events arrive; the work it
/// does before returning its future happens in that order too (use it for anything that
/// must keep order, such as queueing a write). The future is then spawned.
pub type EventHandler = Arc<dyn Fn(SocketCtx, Value, Ack) -> BoxFuture<'static, ()> + Send + Sync>;

/// Consulted before an event's handler runs (rate limits, admission). `None`: nothing to
/// check for this event. `Some(future)`: `Err` refuses the event (the client gets the
/// error in its ack or an `error` event and the handler does not run). The kernel polls
/// the future once right away; one that is not ready then (a network round trip) delays
/// this event and every later event of the socket, so their order is kept. Keep the
/// `None` path cheap: it runs on every event.
pub type EventGuard = Arc<dyn Fn(&SocketCtx, &str) -> Option<BoxFuture<'static, Result<(), ApiError>>> + Send + Sync>;

/// Called when a socket connects (after authentication) or disconnects.
pub type SocketHook = Arc<dyn Fn(SocketCtx) -> BoxFuture<'static, ()> + Send + Sync>;

/// The handshake of a connecting socket.
pub struct Handshake {
    /// The `auth` object of the Socket.IO handshake (`{}` when absent).
    pub auth: Value,
    /// The `authorization` and `cookie` headers of the request that opened the session,
    /// and with a cookie its `origin` and `host`: the only ones a session keeps (the
    /// kernel's `compact`).
    pub headers: HeaderMap,
    /// The client's address as the kernel resolved it (see [`crate::net::ClientIp`]).
    pub client_ip: Option<std::net::IpAddr>,
}

/// Connect middleware: refuse the socket (the client gets `connect_error` with the
/// error's message) or return the principal it authenticated, if any.
pub type ConnectMiddleware =
    Arc<dyn Fn(Arc<Handshake>) -> BoxFuture<'static, Result<Option<Principal>, ApiError>> + Send + Sync>;

/// Emits to sockets anywhere in the cluster.
#[async_trait]
pub trait Emitter: Send + Sync + 'static {
    /// Emits to every socket of `user_id`.
    async fn to_user(&self, user_id: &str, event: &str, data: &Value);
    /// Emits to every socket in `room`.
    async fn to_room(&self, room: &str, event: &str, data: &Value);
    /// Emits a stream event (a message, DESIGN §4 Streams) to every socket of `user_id`.
    /// Unlike [`Emitter::to_user`], whose events may be dropped where a socket's buffer is
    /// full (typing, presence), a socket that cannot take it is closed at the transport,
    /// so its client reconnects and syncs rather than miss it unseen. `pos` is the event's
    /// position in `user_id`'s stream: events for one user leave a node in `pos` order.
    async fn stream_to_user(&self, user_id: &str, pos: u64, event: &str, data: &Value) {
        let _ = pos;
        self.to_user(user_id, event, data).await
    }
    /// Ends every socket of `user_id` opened with `credential`, on every node:
    /// `session_ended {code, message}` first, then the socket is closed, at the transport
    /// where it cannot take a packet.
    async fn end_credential(&self, user_id: &str, credential: &CredentialId, code: &str, message: &str);
    /// How many sockets are open on this node.
    fn local_sockets(&self) -> usize;
}

pub type SharedEmitter = Arc<dyn Emitter>;
