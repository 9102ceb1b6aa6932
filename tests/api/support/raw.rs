//! Clients below Socket.IO, for the edge tests and the fuzzer: a raw TCP connection that
//! performs the WebSocket upgrade by hand (so it can send frames no library would), and
//! a WebSocket speaking Engine.IO/Socket.IO packets as text.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WS_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// A TCP connection from a chosen loopback address (127.0.0.x counts as another client).
pub async fn tcp_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Writes a WebSocket upgrade request for the Socket.IO path and reads the answer's head.
/// Returns the status line.
pub async fn upgrade(tcp: &mut TcpStream, addr: SocketAddr) -> std::io::Result<String> {
    let req = format!(
        "GET {WS_PATH} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    Ok(head.lines().next().unwrap_or_default().to_owned())
}

/// The header of a masked client text frame announcing `len` payload bytes (the payload
/// itself is not written).
pub fn text_frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u16::MAX as u64 {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]); // a zero mask: the payload goes as written
    h
}

/// True once the peer has closed the connection (EOF or reset), reading and dropping
/// whatever arrives before; false if it is still open after `within`.
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to the Socket.IO endpoint, past the Engine.IO open packet. The client side
/// accepts large messages so that what the server sends is never the client's limit.
pub async fn ws(addr: SocketAddr) -> Ws {
    ws_with(addr, &[]).await
}

/// [`ws`] with extra request headers (a session cookie, an Origin).
pub async fn ws_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let mut req = format!("ws://{addr}{WS_PATH}").into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
        .await
        .expect("websocket");
    past_open(ws).await
}

/// `ws` once the Engine.IO open packet has arrived.
async fn past_open(mut ws: Ws) -> Ws {
    let open = next_text(&mut ws, Duration::from_secs(5))
        .await
        .expect("engine.io open");
    assert!(open.starts_with('0'), "engine.io open packet: {open}");
    ws
}

/// [`ws`] over a connection with a small, fixed receive buffer: a client that stops
/// reading fills it (and the server's send buffer) after a few hundred KiB instead of the
/// tens of MiB loopback autotuning allows.
pub async fn ws_small_window(addr: SocketAddr) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let tcp = socket.connect(addr).await.expect("connect");
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let req = format!("ws://{addr}{WS_PATH}").into_client_request().expect("request");
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(tcp), Some(config))
        .await
        .expect("websocket");
    past_open(ws).await
}

/// Emits `count` events of `event` with `data`, at most `window` unanswered at a time,
/// and waits for every ack; returns the acks that were not `{ok: true}`.
pub async fn emit_many(ws: &mut Ws, event: &str, data: &serde_json::Value, count: u32, window: u32) -> Vec<String> {
    let mut failed = Vec::new();
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < count {
        while sent < count && sent - acked < window {
            let packet = format!("42{sent}{}", serde_json::json!([event, data]));
            ws.send(Message::text(packet)).await.expect("send");
            sent += 1;
        }
        let Some(t) = next_text(ws, Duration::from_secs(10)).await else {
            panic!("no ack after {acked} of {count}");
        };
        if let Some(rest) = t.strip_prefix("43") {
            acked += 1;
            if !rest.contains(r#""ok":true"#) {
                failed.push(rest.to_owned());
            }
        }
    }
    failed
}

/// The next text message, answering Engine.IO pings on the way; `None` when the socket
/// closed or nothing came within `within`.
pub async fn next_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                    continue;
                }
                return Some(t.as_str().to_owned());
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sends the Socket.IO CONNECT with a token and waits for the answer packet.
pub async fn sio_connect(ws: &mut Ws, token: &str) -> String {
    let packet = format!("40{}", serde_json::json!({ "token": token }));
    ws.send(Message::text(packet)).await.expect("send connect");
    next_text(ws, Duration::from_secs(5)).await.expect("connect answer")
}

/// Sends the Socket.IO CONNECT without credentials in `auth` (headers carry them).
pub async fn sio_connect_bare(ws: &mut Ws) -> String {
    ws.send(Message::text("40")).await.expect("send connect");
    next_text(ws, Duration::from_secs(5)).await.expect("connect answer")
}

/// The next Socket.IO event `name` as its payload, skipping others; `None` if the socket
/// closed or nothing came within `within`.
pub async fn next_event(ws: &mut Ws, name: &str, within: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = next_text(ws, left).await?;
        if let Some(body) = text.strip_prefix("42")
            && let Ok(serde_json::Value::Array(mut parts)) = serde_json::from_str::<serde_json::Value>(body)
            && parts.first().and_then(|v| v.as_str()) == Some(name)
        {
            return Some(if parts.len() > 1 {
                parts.swap_remove(1)
            } else {
                serde_json::Value::Null
            });
        }
    }
}

/// Emits `event` with ack id `id` and returns the ack's first argument.
pub async fn emit_ack(ws: &mut Ws, id: u32, event: &str, data: serde_json::Value) -> Option<serde_json::Value> {
    let packet = format!("42{id}{}", serde_json::json!([event, data]));
    ws.send(Message::text(packet)).await.ok()?;
    // SecantusDB (the MongoDB test server) answers large reads slowly while other tests
    // load it; a missing answer still shows within this.
    let wait = if super::storage::on_mongo() { 30 } else { 5 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let prefix = format!("43{id}");
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = next_text(ws, left).await?;
        if let Some(body) = text.strip_prefix(&prefix)
            && let Ok(serde_json::Value::Array(mut parts)) = serde_json::from_str::<serde_json::Value>(body)
        {
            return parts.drain(..).next();
        }
    }
}

/// True once the server has closed the WebSocket (or the connection under it).
pub async fn ws_closed_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                let _ = ws.send(Message::text("3")).await;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The resident set size of a process, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
