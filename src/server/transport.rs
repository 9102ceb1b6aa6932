//! The kernel's own WebSocket upgrade for Socket.IO, so that a socket's transport can be
//! closed (`confab_sdk::live::cut`, whose documentation says why). For every WebSocket
//! request the kernel answers the upgrade itself, wraps the upgraded stream in a
//! [`Cuttable`] and hands `(stream, request)` to socketioxide's service (which serves
//! already upgraded streams since 0.18.8).

use std::sync::Arc;
use std::task::{Context, Poll};

use confab_sdk::live::{Cuttable, Registered, TransportCut, TransportLink, Transports};
use hyper_util::rt::TokioIo;
use salvo::http::{HeaderValue, StatusCode, header};
use salvo::hyper::upgrade::Upgraded;
use salvo::hyper::{self, Request, Response};
use tower::{Layer, Service};

use super::compact;

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
                req.extensions_mut()
                    .insert(TransportLink::polling(self.registry.clone()));
                if compact::opens_session(req.uri()) {
                    let (mut parts, body) = req.into_parts();
                    compact::compact(&mut parts.uri, &mut parts.headers);
                    req = Request::from_parts(parts, body);
                }
            }
            return futures_util::future::Either::Left(Service::<Request<B>>::call(&mut self.inner, req));
        };
        let cut = TransportCut::default();
        let registered = match &sid {
            Some(sid) => Registered::new(&self.registry, sid, &cut),
            None => {
                req.extensions_mut()
                    .insert(TransportLink::direct(cut.clone(), self.registry.clone()));
                None
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, _) = req.into_parts();
        if sid.is_none() {
            // The upgrade is answered below: the new session keeps what is left of the head.
            compact::compact(&mut parts.uri, &mut parts.headers);
        }
        let head = Request::from_parts(parts, ());
        let mut svc = self.inner.clone();
        tokio::spawn(async move {
            let stream = match on_upgrade.await {
                Ok(upgraded) => Cuttable::new(TokioIo::new(upgraded), cut, registered),
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
