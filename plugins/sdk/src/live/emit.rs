//! Emits to this node's sockets: stream events that never skip a socket, the resync
//! after an outage, ending sockets whose credential ended, and the [`Emitter`] over
//! socketioxide's adapter that the in-process cluster backend hands the plugins.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::SocketRef;

use super::bound::principal_of;
use super::cut::cut;
use super::{LiveCounters, StreamGate};
use crate::auth::{CredentialId, ended};
use crate::realtime::{Emitter, user_room};

/// A stream event to each of `user_id`'s sockets on this node, one by one: a socket whose
/// buffer is full is closed at the transport (counted, logged with the user) instead of
/// skipped; its client reconnects and syncs what it missed.
pub fn stream_local<A: Adapter>(io: &SocketIo<A>, metrics: &LiveCounters, user_id: &str, event: &str, data: &Value) {
    for s in io.local().to(user_room(user_id)).sockets() {
        match s.emit(event, data) {
            Ok(()) => {}
            Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => {
                let closed = cut(&s);
                metrics.stream_overflow(closed);
                tracing::warn!(
                    socket = %s.id,
                    user = user_id,
                    event,
                    closed,
                    "socket buffer full: closed its connection rather than skip a stream event"
                );
            }
            Err(e) => tracing::debug!(socket = %s.id, event, error = %e, "stream emit failed"),
        }
    }
}

/// Cuts the connection of every socket on this node (of `user_id` only, if given): their
/// clients reconnect and sync what this node could not deliver. Sockets being ended
/// (`session_ended` on its way) are left to their grace. Counted in
/// `confab_stream_resyncs_total`; returns how many were closed.
pub fn resync_local<A: Adapter>(io: &SocketIo<A>, metrics: &LiveCounters, user_id: Option<&str>) -> usize {
    let sockets = match user_id {
        Some(u) => io.local().to(user_room(u)).sockets(),
        None => io.local().sockets(),
    };
    let closed = sockets.iter().filter(|s| !is_ending(s) && cut(s)).count();
    metrics.stream_resynced(closed);
    closed
}

/// Ends this node's sockets of `user_id` that `credential` opened (see [`end`]); returns
/// how many.
pub fn end_credential_local<A: Adapter>(
    io: &SocketIo<A>,
    user_id: &str,
    credential: &CredentialId,
    code: &str,
    message: &str,
) -> usize {
    let mut ended = 0;
    for s in io.local().to(user_room(user_id)).sockets() {
        if principal_of(&s).is_some_and(|p| credential.opened(&p)) {
            end(&s, code, message);
            ended += 1;
        }
    }
    ended
}

/// Sends `session_ended` and disconnects the socket. A socket whose outgoing buffer is
/// full can take neither: its WebSocket connection is closed under it instead
/// (`transport::cut`).
pub fn end<A: Adapter>(s: &SocketRef<A>, code: &str, message: &str) {
    use socketioxide::{SendError, SocketError};
    let told = match s.emit(ended::EVENT, &json!({"code": code, "message": message})) {
        Ok(()) => true,
        // Already ended (a logout ends a socket for its token and again for its login):
        // its packets are on their way, and cutting now could drop them.
        Err(SendError::Socket(SocketError::Closed)) => return,
        Err(_) => false,
    };
    tracing::info!(socket = %s.id, code, "ending socket: its credential ended");
    if told {
        match s.clone().disconnect() {
            Ok(()) => {
                s.extensions.insert(Ending);
                // Queued is not sent: a client that stopped reading (with room left in its
                // buffer) would keep the connection open. Cut it if it is still there then.
                let s = s.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(END_GRACE).await;
                    cut(&s);
                });
                return;
            }
            Err(SocketError::Closed) => return,
            Err(SocketError::InternalChannelFull) => {}
        }
    }
    if cut(s) {
        tracing::warn!(socket = %s.id, code, "socket buffer full: closed its connection");
    } else {
        // Polling: there is no connection of its own; the heartbeat closes it.
        tracing::warn!(socket = %s.id, code, "socket buffer full on polling: left to the heartbeat");
    }
}

/// In the extensions of a socket told `session_ended` and disconnected: it stays listed
/// until its transport closes, and nothing else should cut it before the grace is over.
#[derive(Clone, Copy)]
pub struct Ending;

/// Whether `s` is an ended socket waiting for its grace (see [`Ending`]).
pub fn is_ending<A: Adapter>(s: &SocketRef<A>) -> bool {
    s.extensions.get::<Ending>().is_some()
}

/// How long an ended socket's client has to read `session_ended` and the disconnect
/// before its connection is cut.
const END_GRACE: Duration = Duration::from_secs(1);

/// Emits through socketioxide's in-process adapter (the local cluster backend).
pub struct AdapterEmitter<A: Adapter = LocalAdapter> {
    pub io: SocketIo<A>,
    pub metrics: Arc<LiveCounters>,
    pub gate: Arc<StreamGate>,
}

impl<A: Adapter> AdapterEmitter<A> {
    pub fn new(io: SocketIo<A>, metrics: Arc<LiveCounters>) -> Self {
        let gate = StreamGate::local(io.clone(), metrics.clone());
        AdapterEmitter { io, metrics, gate }
    }
}

#[async_trait::async_trait]
impl<A: Adapter> Emitter for AdapterEmitter<A> {
    async fn to_user(&self, user_id: &str, event: &str, data: &Value) {
        self.to_room(&user_room(user_id), event, data).await;
    }
    async fn to_room(&self, room: &str, event: &str, data: &Value) {
        if let Err(e) = self.io.to(room.to_owned()).emit(event, data).await {
            tracing::debug!(room, event, error = %e, "emit failed");
        }
    }
    async fn stream_to_user(&self, user_id: &str, pos: u64, event: &str, data: &Value) {
        self.gate.admit(user_id, pos, event, data);
    }
    async fn end_credential(&self, user_id: &str, credential: &CredentialId, code: &str, message: &str) {
        end_credential_local(&self.io, user_id, credential, code, message);
    }
    fn local_sockets(&self) -> usize {
        self.metrics.open_sockets().max(0) as usize
    }
}
