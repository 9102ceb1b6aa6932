//! Socket.IO keeps the head (URI, headers, extensions) of the request that opened a
//! session for as long as the session lives. hyper parses header values and the URI as
//! slices of the connection's read buffer (8 KiB), so each idle socket would keep that
//! whole buffer alive, and every header in a map of its own. The kernel's transport layer
//! (`transport`) hands socketioxide a compacted head instead: the URI and the headers a
//! connect middleware reads ([`kept`]), copied into one exact-size buffer.

use salvo::http::uri::Uri;
use salvo::http::{HeaderMap, HeaderName, HeaderValue, header};
use salvo::hyper::body::Bytes;

/// The headers a session keeps, those a connect middleware reads (`Handshake::headers`):
/// the credentials and, with a cookie, `origin` and `host`, which decide whether the
/// cookie may be used (`CookieOrigins`). The rest (the WebSocket handshake, the
/// browser's `user-agent`, `accept-*` and the like) is read by nobody once the session is
/// open; the client's address is resolved before this (`ClientIp`, in the extensions).
/// A socket that authenticates with `auth.token` keeps no header map at all.
fn kept(name: &HeaderName, with_cookie: bool) -> bool {
    *name == header::AUTHORIZATION
        || *name == header::COOKIE
        || (with_cookie && (*name == header::ORIGIN || *name == header::HOST))
}

/// Whether the request opens a session (no `sid` in the query): only those heads are kept.
pub fn opens_session(uri: &Uri) -> bool {
    !uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")))
}

/// Replaces the URI with a copy and the headers with copies of the [`kept`] ones, all
/// in one exact-size buffer and a map sized for them (none at all: no map allocated).
pub fn compact(uri: &mut Uri, headers: &mut HeaderMap) {
    let old = std::mem::take(headers);
    let with_cookie = old.contains_key(header::COOKIE);
    let text = uri.to_string();
    let values: usize = old
        .iter()
        .filter(|(n, _)| kept(n, with_cookie))
        .map(|(_, v)| v.len())
        .sum();
    let mut buf = Vec::with_capacity(text.len() + values);
    buf.extend_from_slice(text.as_bytes());
    let mut entries = Vec::new();
    // `HeaderMap::into_iter` yields a name only with the first value of each header.
    let mut name = None;
    for (n, v) in old {
        if n.is_some() {
            name = n;
        }
        let Some(name) = name.as_ref().filter(|n| kept(n, with_cookie)) else {
            continue;
        };
        entries.push((name.clone(), buf.len(), v.len(), v.is_sensitive()));
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = Bytes::from(buf);
    if let Ok(u) = Uri::from_maybe_shared(buf.slice(..text.len())) {
        *uri = u;
    }
    if entries.is_empty() {
        return;
    }
    let mut out = HeaderMap::with_capacity(entries.len());
    for (name, at, len, sensitive) in entries {
        // The bytes came from a valid value: this cannot fail.
        if let Ok(mut v) = HeaderValue::from_maybe_shared(buf.slice(at..at + len)) {
            v.set_sensitive(sensitive);
            out.append(name, v);
        }
    }
    *headers = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_credentials_in_one_copy_and_drops_the_rest() {
        let raw = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocketabcdefgh");
        let mut uri = Uri::from_maybe_shared(raw.slice(..37)).unwrap();
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "example"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("user-agent", "test"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let mut auth = HeaderValue::from_maybe_shared(raw.slice(37..)).unwrap();
        auth.set_sensitive(true);
        h.insert(header::AUTHORIZATION, auth);
        compact(&mut uri, &mut h);
        assert_eq!(uri, "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(h.len(), 4);
        assert_eq!(h["host"], "example");
        let cookies: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h["authorization"], "abcdefgh");
        assert!(h["authorization"].is_sensitive());
        assert!(h.get("user-agent").is_none() && h.get("sec-websocket-key").is_none());
    }

    #[test]
    fn a_head_without_credentials_keeps_no_map() {
        let mut uri = Uri::from_static("/socket.io/?EIO=4&transport=polling");
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, HeaderValue::from_static("test"));
        // Without a cookie, nothing reads these.
        h.insert(header::HOST, HeaderValue::from_static("example"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://example"));
        compact(&mut uri, &mut h);
        assert!(h.is_empty() && h.capacity() == 0);
        assert_eq!(uri, "/socket.io/?EIO=4&transport=polling");
    }

    #[test]
    fn only_session_opening_requests_are_kept() {
        assert!(opens_session(&Uri::from_static("/socket.io/?EIO=4&transport=polling")));
        assert!(opens_session(&Uri::from_static("/socket.io/")));
        assert!(!opens_session(&Uri::from_static(
            "/socket.io/?EIO=4&transport=websocket&sid=abc"
        )));
    }
}
