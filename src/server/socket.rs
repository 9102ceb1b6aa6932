//! Socket.IO on the `/` namespace. The kernel owns the namespace: it authenticates the
//! handshake with the plugins' connect middleware, joins each socket to its user's room,
//! and dispatches every event to the plugin that registered it.

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use confab_sdk::auth::Principal;
use confab_sdk::deadlines::Deadlines;
use confab_sdk::error::{ApiError, ErrorCode};
use confab_sdk::live::{BoundSocket, SocketState};
use confab_sdk::net::ClientIp;
use confab_sdk::realtime::{
    Ack, ConnectMiddleware, EventGuard, EventHandler, Handshake, SocketCtx, SocketHook, SocketOps, user_room,
};
use futures_util::FutureExt;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::Socket;
use socketioxide_core::adapter::DefinedAdapter;
use tokio::sync::oneshot;

use super::lifecycle::Credential;

use crate::metrics::{EventStats, Metrics};

/// What the plugins contributed to sockets, shared by every socket.
pub struct SocketHost {
    pub middleware: Vec<ConnectMiddleware>,
    /// Each event's handler and figures (`Metrics::event_stats`).
    pub events: HashMap<String, (EventHandler, Arc<EventStats>)>,
    /// Consulted before each handler (rate limits); see [`EventGuard`].
    pub guards: Vec<EventGuard>,
    pub on_connect: Vec<SocketHook>,
    pub on_disconnect: Vec<SocketHook>,
    pub metrics: Arc<Metrics>,
    pub max_in_flight: usize,
    /// Every socket's credential expiry, on one timer.
    pub deadlines: Arc<Deadlines>,
}

/// Per-socket state, kept in the socket's extensions behind the SDK's handle
/// ([`SocketState`], which lets the cluster backends read the principal): one allocation
/// per socket.
struct State {
    /// Who is on the socket, for as long as their credential lives (`lifecycle`).
    credential: Credential,
    in_flight: AtomicUsize,
    /// Completes once the last event that had to wait for a guard has run its handler's
    /// synchronous part; later events wait for it, so a slow guard keeps the order.
    tail: Mutex<Option<oneshot::Receiver<()>>>,
    deadlines: Arc<Deadlines>,
}

impl BoundSocket for State {
    fn principal(&self) -> Option<Arc<Principal>> {
        self.credential.current()
    }
}

/// The kernel's state of socket `s` (none before its handshake middleware ran).
fn state<A: Adapter>(s: &SocketRef<A>) -> Option<Arc<State>> {
    let handle: Arc<dyn Any + Send + Sync> = s.extensions.get::<SocketState>()?.0;
    handle.downcast::<State>().ok()
}

/// The ack sender plus whether the client asked for an ack at all (socketioxide does not
/// expose that, but an extractor sees the ack id).
struct AckInfo<A: Adapter> {
    sender: AckSender<A>,
    wanted: bool,
}

impl<A: Adapter> FromMessageParts<A> for AckInfo<A> {
    type Error = Infallible;
    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let sender = AckSender::from_message_parts(s, v, ack_id)?;
        Ok(AckInfo {
            sender,
            wanted: ack_id.is_some(),
        })
    }
}

/// A refused handshake. socketioxide's CONNECT_ERROR carries only `{message}`, so the
/// code leads the message (`token_expired: token expired`) where clients read it
/// (`err.message` in socket.io-client); DESIGN §4 lists the codes.
#[derive(Debug)]
struct Refusal(ApiError);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.handshake_code(), self.0.message)
    }
}

/// One socket, whatever the adapter.
struct AdapterSocket<A: Adapter>(SocketRef<A>);

impl<A: Adapter> SocketOps for AdapterSocket<A> {
    fn id(&self) -> String {
        self.0.id.to_string()
    }
    fn emit(&self, event: &str, data: &Value) -> bool {
        self.0.emit(event, data).is_ok()
    }
    fn join(&self, room: &str) {
        self.0.join(room.to_owned());
    }
    fn leave(&self, room: &str) {
        self.0.leave(room.to_owned());
    }
    fn disconnect(&self, reason: &str) {
        tracing::info!(socket = %self.0.id, reason, "disconnecting socket");
        let _ = self.0.clone().disconnect();
    }
    fn rebind(&self, principal: Principal) {
        if let Some(state) = state(&self.0) {
            state.credential.bind(&self.0, principal, &state.deadlines);
        }
    }
}

fn ctx<A: Adapter>(s: &SocketRef<A>, state: &State) -> SocketCtx {
    SocketCtx {
        socket: Arc::new(AdapterSocket(s.clone())),
        principal: state.credential.current(),
    }
}

/// Installs the `/` namespace on `io`. Returns the adapter's initialisation (a ready
/// future for the local adapter; the Redis adapter subscribes to its channels in it).
pub fn install<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, host: Arc<SocketHost>) -> A::InitRes {
    let mw_host = host.clone();
    let middleware = move |s: SocketRef<A>, TryData(auth): TryData<Value>| {
        let host = mw_host.clone();
        async move {
            let auth = match auth {
                Ok(v @ Value::Object(_)) => v,
                _ => Value::Object(Default::default()),
            };
            let parts = s.req_parts();
            let handshake = Arc::new(Handshake {
                auth,
                headers: parts.headers.clone(),
                client_ip: parts.extensions.get::<ClientIp>().map(|c| c.0),
            });
            let mut principal = None;
            for m in &host.middleware {
                if let Some(p) = m(handshake.clone()).await.map_err(Refusal)? {
                    principal = Some(p);
                }
            }
            let state = Arc::new(State {
                credential: Credential::default(),
                in_flight: AtomicUsize::new(0),
                tail: Mutex::default(),
                deadlines: host.deadlines.clone(),
            });
            // Everything an event needs is set up here, before socketioxide answers the
            // handshake: its connect handler is spawned after the answer, and a client may
            // emit the moment it is connected.
            if let Some(p) = principal {
                s.join(user_room(p.user_id()));
                state.credential.bind(&s, p, &host.deadlines);
            }
            s.extensions.insert(SocketState(state));
            register_handlers(&s, &host);
            Ok::<(), Refusal>(())
        }
    };
    let connect = move |s: SocketRef<A>| {
        let host = host.clone();
        async move {
            host.metrics.live.socket_opened();
            let Some(state) = state(&s) else {
                return;
            };
            let c = ctx(&s, &state);
            for hook in &host.on_connect {
                hook(c.clone()).await;
            }
        }
    };
    io.ns("/", connect.with(middleware))
}

fn register_handlers<A: Adapter>(s: &SocketRef<A>, host: &Arc<SocketHost>) {
    let dispatch_host = host.clone();
    s.on_fallback(
        move |s: SocketRef<A>, Event(event): Event, ack: AckInfo<A>, TryData(data): TryData<Value>| {
            dispatch(&dispatch_host, s, event, ack, data)
        },
    );
    let disconnect_host = host.clone();
    s.on_disconnect(move |s: SocketRef<A>| {
        let host = disconnect_host.clone();
        async move {
            host.metrics.live.socket_closed();
            if let Some(state) = state(&s) {
                state.credential.release(&host.deadlines);
                let c = ctx(&s, &state);
                for hook in &host.on_disconnect {
                    hook(c.clone()).await;
                }
            }
        }
    });
}

/// Runs synchronously in the order events arrive, so the plugin's synchronous part keeps
/// that order; the returned future is spawned by socketioxide.
fn dispatch<A: Adapter>(
    host: &Arc<SocketHost>,
    s: SocketRef<A>,
    event: String,
    ack: AckInfo<A>,
    data: Result<Value, socketioxide::ParserError>,
) -> futures_util::future::BoxFuture<'static, ()> {
    let started = std::time::Instant::now();
    let handler = host.events.get(&event);
    match handler {
        Some((_, stats)) => stats.received(),
        None => host.metrics.unknown_event(),
    }
    let Some(state) = state(&s) else {
        return async {}.boxed();
    };
    let c = ctx(&s, &state);
    let wanted = ack.wanted;
    let sender = ack.sender;
    let ack =
        Ack::new(wanted.then(|| Box::new(move |v: Value| drop(sender.send(&v))) as Box<dyn FnOnce(Value) + Send>));
    let Some((handler, stats)) = handler else {
        if ack.wanted() {
            ack.fail(&c, &ApiError::not_found(format!("unknown event `{event}`")));
        }
        return async {}.boxed();
    };
    let data = match data {
        Ok(d) => d,
        // `socket.emit("sync", callback)` sends no argument at all: the same as `null`.
        // socketioxide (0.18) reports that only by this message; tests/e2e's sync test
        // catches it if an upgrade changes the wording.
        Err(e) if e.to_string().contains("first element not found") => Value::Null,
        Err(e) => {
            ack.fail(
                &c,
                &ApiError::validation("payload", format!("cannot decode the event payload: {e}")),
            );
            return async {}.boxed();
        }
    };
    // Bounded work per socket: a client cannot queue unbounded events on the server.
    if state.in_flight.fetch_add(1, Ordering::AcqRel) >= host.max_in_flight {
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        ack.fail(
            &c,
            &ApiError::new(
                ErrorCode::Unavailable,
                "too many events in flight on this socket; wait for acks",
            ),
        );
        return async {}.boxed();
    }
    // Released when the event's work ends, however it ends (a panicking handler too).
    let in_flight = InFlight(state.clone());
    // Guards answer at once when they can (in-process counters); only those that cannot
    // (a Redis round trip) make the event wait.
    let mut pending = Vec::new();
    for guard in &host.guards {
        let Some(mut check) = guard(&c, &event) else { continue };
        match (&mut check).now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                ack.fail(&c, &e);
                return async {}.boxed();
            }
            None => pending.push(check),
        }
    }
    let mut tail = state.tail.lock().unwrap_or_else(|e| e.into_inner());
    let mut before = tail.take();
    if let Some(rx) = &mut before
        && !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    {
        before = None;
    }
    if before.is_none() && pending.is_empty() {
        drop(tail);
        let fut = handler(c, data, ack);
        let stats = stats.clone();
        return async move {
            fut.await;
            stats.handled(started.elapsed());
            drop(in_flight);
        }
        .boxed();
    }
    let (done, next) = oneshot::channel();
    *tail = Some(next);
    drop(tail);
    let (handler, stats) = (handler.clone(), stats.clone());
    async move {
        if let Some(before) = before {
            // Sent or dropped (the earlier event was refused or its task ended): go on.
            let _ = before.await;
        }
        for check in pending {
            if let Err(e) = check.await {
                ack.fail(&c, &e);
                return;
            }
        }
        let fut = handler(c, data, ack);
        let _ = done.send(());
        fut.await;
        stats.handled(started.elapsed());
        drop(in_flight);
    }
    .boxed()
}

/// One event's slot in its socket's in-flight count, given back on drop.
struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
