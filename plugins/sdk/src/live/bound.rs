//! The handle the kernel keeps in every socket's extensions, so that the crates which end
//! sockets (the cluster backends' emitters) can read a socket's principal. The kernel's
//! own per-socket state sits behind it, in the same allocation.

use std::any::Any;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use crate::auth::Principal;

/// What every crate may ask of a socket's kernel state.
pub trait BoundSocket: Any + Send + Sync {
    /// The principal the socket is bound to now: none before its handshake completed, or
    /// without a credential; a newer one after `refresh_token`.
    fn principal(&self) -> Option<Arc<Principal>>;
}

/// In the extensions of every socket the kernel accepted.
#[derive(Clone)]
pub struct SocketState(pub Arc<dyn BoundSocket>);

/// The principal socket `s` is bound to now (see [`BoundSocket::principal`]).
pub fn principal_of<A: Adapter>(s: &SocketRef<A>) -> Option<Arc<Principal>> {
    s.extensions.get::<SocketState>()?.0.principal()
}
