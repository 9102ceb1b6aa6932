//! Closing a socket's transport from outside. socketioxide's `disconnect()` goes through
//! the socket's outgoing buffer and does nothing when that is full, and its transport
//! close is crate-private. So the kernel answers WebSocket upgrades itself and wraps each
//! upgraded stream in a [`Cuttable`]; cutting it fails its pending and future reads and
//! writes: engineioxide ends the session as a transport error, the client sees its
//! connection close and reconnects by itself (a `disconnect()` would tell the official
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
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

impl TransportLink {
    /// For a request that opens a session on WebSocket: the socket's own cut.
    pub fn direct(cut: TransportCut, registry: Arc<Transports>) -> Self {
        TransportLink {
            direct: Some(cut),
            registry,
        }
    }

    /// For a request that opens a session on polling: the socket may upgrade later.
    pub fn polling(registry: Arc<Transports>) -> Self {
        TransportLink { direct: None, registry }
    }
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
pub struct Registered {
    registry: Arc<Transports>,
    sid: String,
    cut: TransportCut,
}

impl Registered {
    /// Registers `cut` for `sid` unless another connection holds that id (engineioxide
    /// accepts one WebSocket per session and refuses the other).
    pub fn new(registry: &Arc<Transports>, sid: &str, cut: &TransportCut) -> Option<Registered> {
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

impl<S> Cuttable<S> {
    /// `inner`, ended by `cut`; `registered` is dropped with the connection.
    pub fn new(inner: S, cut: TransportCut, registered: Option<Registered>) -> Self {
        Cuttable {
            inner,
            cut,
            _registered: registered,
        }
    }
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
