//! Socket.IO keeps the head (URI, headers, extensions) of the request that opened a
//! session for as long as the session lives. hyper parses header values and the URI as
//! slices of the connection's read buffer (8 KiB), so each idle socket would keep that
//! whole buffer alive. This layer copies the URI and the header values of
//! session-opening requests into one small buffer first.

use std::task::{Context, Poll};

use salvo::http::uri::Uri;
use salvo::http::{HeaderMap, HeaderValue};
use salvo::hyper::Request;
use salvo::hyper::body::Bytes;
use tower::{Layer, Service};

/// Copies the head of Socket.IO requests that open a session (no `sid` in the query).
#[derive(Clone, Copy, Debug, Default)]
pub struct CompactHeadLayer;

impl<S> Layer<S> for CompactHeadLayer {
    type Service = CompactHead<S>;
    fn layer(&self, inner: S) -> CompactHead<S> {
        CompactHead(inner)
    }
}

#[derive(Clone, Debug)]
pub struct CompactHead<S>(S);

impl<S, B> Service<Request<B>> for CompactHead<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if opens_session(req.uri()) {
            compact(&mut req);
        }
        self.0.call(req)
    }
}

fn opens_session(uri: &Uri) -> bool {
    !uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")))
}

/// Replaces the URI and every header value with copies that share one exact-size buffer.
fn compact<B>(req: &mut Request<B>) {
    let uri = req.uri().to_string();
    let headers = std::mem::take(req.headers_mut());
    let mut buf = Vec::with_capacity(uri.len() + headers.values().map(|v| v.len()).sum::<usize>());
    buf.extend_from_slice(uri.as_bytes());
    for v in headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = Bytes::from(buf);
    let mut at = uri.len();
    if let Ok(u) = Uri::from_maybe_shared(buf.slice(..at)) {
        *req.uri_mut() = u;
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    // `HeaderMap::into_iter` yields a name only with the first value of each header.
    let mut name = None;
    for (n, v) in headers {
        if n.is_some() {
            name = n;
        }
        let Some(name) = &name else { continue };
        let sensitive = v.is_sensitive();
        let copy = HeaderValue::from_maybe_shared(buf.slice(at..at + v.len()));
        at += v.len();
        let mut copy = copy.unwrap_or(v);
        copy.set_sensitive(sensitive);
        out.append(name.clone(), copy);
    }
    *req.headers_mut() = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_head_of_session_opening_requests() {
        let raw = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocketabcdefgh");
        let mut req = Request::builder()
            .uri(Uri::from_maybe_shared(raw.slice(..37)).unwrap())
            .header("host", "example")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-custom", HeaderValue::from_maybe_shared(raw.slice(37..)).unwrap())
            .body(())
            .unwrap();
        compact(&mut req);
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(req.headers()["host"], "example");
        assert_eq!(req.headers()["x-custom"], "abcdefgh");
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(req.headers().len(), 4);
    }

    #[test]
    fn only_session_opening_requests_are_copied() {
        assert!(opens_session(&Uri::from_static("/socket.io/?EIO=4&transport=polling")));
        assert!(opens_session(&Uri::from_static("/socket.io/")));
        assert!(!opens_session(&Uri::from_static(
            "/socket.io/?EIO=4&transport=websocket&sid=abc"
        )));
    }
}
