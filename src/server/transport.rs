//! The kernel's own WebSocket upgrade for Socket.IO, so that it can close a socket's
//! transport. socketioxide's `disconnect()` goes through the socket's outgoing buffer and
//! does nothing when that is full, and its transport close is crate-private; salvo's
//! connection abort no longer reaches an upgraded connection. So for every WebSocket
//! request the kernel answers the upgrade itself, wraps the upgraded stream in a
//! [`Cuttable`] and hands `(stream, request)` to socketioxide's service (which serves
//! already upgraded streams since 0.18.8). Cutting the stream fails its pending and future
//! reads and writes: engineioxide ends the session as a transport error, the client sees
//! its connection close and reconnects by itself (a `disconnect()` would tell the official
//! client not to).
//!
//! A socket that opened on WebSocket finds its cut in its request's extensions
//! ([`TransportLink`]); one that opened on polling and upgraded later is found by its id in
//! the registry (a socket's id is its Engine.IO session id, the upgrade request's `sid`).
//! A socket still on polling has no stream of its own to cut: a client that stops polling
//! is closed by the heartbeat (`ping_interval_secs` + `ping_timeout_secs`).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use hyper_util::rt::TokioIo;
use salvo::http::{HeaderValue, StatusCode, header};
use salvo::hyper::upgrade::Upgraded;
use salvo::hyper::{self, Request, Response};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::{Layer, Service};

#[derive(Default)]
struct CutState {
    cut: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
}

/// Closes one WebSocket connection from outside.
#[derive(Clone, Default)]
pub struct TransportCut(Arc<CutState>);

impl TransportCut {
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::Release);
        self.0.read.wake();
        self.0.write.wake();
    }

    fn is_cut(&self) -> bool {
        self.0.cut.load(Ordering::Acquire)
    }
}

/// The cuts of upgraded sockets, by socket id.
#[derive(Default)]
pub struct Transports(Mutex<HashMap<String, TransportCut>>);

impl Transports {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, TransportCut>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// In the extensions of every request that opens a Socket.IO session (and thus of the
/// socket's `req_parts`): its own cut if it opened on WebSocket, and the registry.
#[derive(Clone)]
pub struct TransportLink {
    direct: Option<TransportCut>,
    registry: Arc<Transports>,
}

/// Closes `s`'s WebSocket connection. False if it has none (still on polling).
pub fn cut<A: Adapter>(s: &SocketRef<A>) -> bool {
    let Some(link) = s.req_parts().extensions.get::<TransportLink>() else {
        return false;
    };
    let found = link
        .direct
        .clone()
        .or_else(|| link.registry.map().get(&s.id.to_string()).cloned());
    match found {
        Some(c) => {
            c.cut();
            true
        }
        None => false,
    }
}

/// A registry entry, removed when the connection (or the failed upgrade) is dropped.
struct Registered {
    registry: Arc<Transports>,
    sid: String,
    cut: TransportCut,
}

impl Registered {
    /// Registers `cut` for `sid` unless another connection holds that id (engineioxide
    /// accepts one WebSocket per session and refuses the other).
    fn new(registry: &Arc<Transports>, sid: &str, cut: &TransportCut) -> Option<Registered> {
        match registry.map().entry(sid.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(cut.clone());
                Some(Registered {
                    registry: registry.clone(),
                    sid: sid.to_owned(),
                    cut: cut.clone(),
                })
            }
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = self.registry.map();
        if map.get(&self.sid).is_some_and(|c| Arc::ptr_eq(&c.0, &self.cut.0)) {
            map.remove(&self.sid);
        }
    }
}

/// An upgraded connection that [`TransportCut::cut`] ends.
pub struct Cuttable<S> {
    inner: S,
    cut: TransportCut,
    _registered: Option<Registered>,
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "transport closed by the server")
}

impl<S> Cuttable<S> {
    /// `Ready(Err)` once cut; otherwise registers the waker so that a cut wakes the task.
    fn check(&self, waker: &AtomicWaker, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if self.cut.is_cut() {
            return Poll::Ready(Err(aborted()));
        }
        waker.register(cx.waker());
        // A cut between the check and the registration would otherwise go unnoticed.
        if self.cut.is_cut() {
            return Poll::Ready(Err(aborted()));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cuttable<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.check(&self.cut.0.read, cx) {
            return Poll::Ready(e);
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cuttable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(e)) = self.check(&self.cut.0.write, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(e)) = self.check(&self.cut.0.write, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.check(&self.cut.0.write, cx) {
            return Poll::Ready(e);
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.check(&self.cut.0.write, cx) {
            return Poll::Ready(e);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The stream socketioxide is handed.
pub type UpgradedStream = Cuttable<TokioIo<Upgraded>>;

/// Sits in front of socketioxide's service: see the module documentation.
#[derive(Clone, Default)]
pub struct CuttableLayer(Arc<Transports>);

impl<S> Layer<S> for CuttableLayer {
    type Service = CuttableService<S>;
    fn layer(&self, inner: S) -> CuttableService<S> {
        CuttableService {
            inner,
            registry: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CuttableService<S> {
    inner: S,
    registry: Arc<Transports>,
}

/// The Engine.IO session a request belongs to (`sid` in the query), if any.
fn session_id(req: &Request<impl Sized>) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("sid="))
        .filter(|sid| !sid.is_empty())
}

fn is_websocket_upgrade(req: &Request<impl Sized>) -> bool {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let ws_transport = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "transport=websocket"));
    req.method() == hyper::Method::GET && upgrade && ws_transport
}

impl<S, B, RB> Service<Request<B>> for CuttableService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Service<(UpgradedStream, Request<()>)> + Clone + Send + 'static,
    <S as Service<(UpgradedStream, Request<()>)>>::Error: std::fmt::Display,
    <S as Service<(UpgradedStream, Request<()>)>>::Future: Send,
    <S as Service<Request<B>>>::Future: Send + 'static,
    <S as Service<Request<B>>>::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = <S as Service<Request<B>>>::Error;
    type Future = futures_util::future::Either<
        <S as Service<Request<B>>>::Future,
        std::future::Ready<Result<Response<RB>, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let sid = session_id(&req).map(str::to_owned);
        let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let (true, Some(key)) = (is_websocket_upgrade(&req), key) else {
            if sid.is_none() {
                // Opens a polling session: the socket may upgrade later.
                req.extensions_mut().insert(TransportLink {
                    direct: None,
                    registry: self.registry.clone(),
                });
            }
            return futures_util::future::Either::Left(Service::<Request<B>>::call(&mut self.inner, req));
        };
        let cut = TransportCut::default();
        let registered = match &sid {
            Some(sid) => Registered::new(&self.registry, sid, &cut),
            None => {
                req.extensions_mut().insert(TransportLink {
                    direct: Some(cut.clone()),
                    registry: self.registry.clone(),
                });
                None
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let mut svc = self.inner.clone();
        tokio::spawn(async move {
            let stream = match on_upgrade.await {
                Ok(upgraded) => Cuttable {
                    inner: TokioIo::new(upgraded),
                    cut,
                    _registered: registered,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            if let Err(e) = Service::<(UpgradedStream, Request<()>)>::call(&mut svc, (stream, head)).await {
                tracing::debug!(error = %e, "socket.io refused an upgraded websocket");
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut res = Response::new(RB::default());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        futures_util::future::Either::Right(std::future::ready(Ok(res)))
    }
}
