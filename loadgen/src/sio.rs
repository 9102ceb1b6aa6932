//! A minimal Socket.IO v5 client over a WebSocket (Engine.IO v4, default namespace): just
//! what the load generator needs, lean enough that the client is not the bottleneck.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A frame from the server, already split into its Socket.IO parts.
pub enum Frame {
    /// `42[...]`: an event (raw JSON array text).
    Event(String),
    /// `43<id>[...]`: the ack of our emit `id`.
    Ack(u64, String),
    Closed,
}

/// Sends frames on one connection; cheap to clone.
#[derive(Clone)]
pub struct Writer(mpsc::UnboundedSender<String>);

impl Writer {
    /// Emits `[event, data]` with an ack id.
    pub fn emit_with_ack(&self, id: u64, event: &str, data: &serde_json::Value) -> bool {
        self.0.send(format!("42{id}[\"{event}\",{data}]")).is_ok()
    }
    pub fn close(&self) {
        let _ = self.0.send(String::new());
    }
}

/// Connects, authenticates with `token`, and returns the writer and a stream of frames.
pub async fn connect(base: &str, token: &str) -> Result<(Writer, mpsc::UnboundedReceiver<Frame>), String> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.replacen("http://", "ws://", 1)
    );
    // Nagle off, as browsers and socket.io-client have it: latency is what we measure.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    // Engine.IO open packet, then the Socket.IO CONNECT with the auth payload.
    match stream.next().await {
        Some(Ok(Message::Text(t))) if t.starts_with('0') => {}
        other => return Err(format!("expected the open packet, got {other:?}")),
    }
    let auth = serde_json::json!({ "token": token });
    sink.send(Message::text(format!("40{auth}")))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with("40") => break,
            Some(Ok(Message::Text(t))) if t.starts_with("44") => return Err(format!("connect_error: {}", &t[2..])),
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                sink.send(Message::text("3")).await.map_err(|e| e.to_string())?
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("handshake failed: {other:?}")),
        }
    }
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let pong = out_tx.clone();
    tokio::spawn(async move {
        while let Some(text) = out_rx.recv().await {
            if text.is_empty() {
                let _ = sink.close().await;
                return;
            }
            if sink.send(Message::text(text)).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(t) = msg else { continue };
            let t = t.as_str();
            if t == "2" {
                let _ = pong.send("3".into());
            } else if let Some(rest) = t.strip_prefix("42") {
                let _ = in_tx.send(Frame::Event(rest.to_owned()));
            } else if let Some(rest) = t.strip_prefix("43") {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                if let Ok(id) = rest[..digits].parse() {
                    let _ = in_tx.send(Frame::Ack(id, rest[digits..].to_owned()));
                }
            }
        }
        let _ = in_tx.send(Frame::Closed);
    });
    Ok((Writer(out_tx), in_rx))
}
