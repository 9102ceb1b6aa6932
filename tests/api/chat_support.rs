//! Helpers for the chat tests: users, REST calls with a token, and Socket.IO clients that
//! collect every event they receive so a test can wait for one with a timeout.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::support::{Server, unique};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Cheap password hashing (registration is not what these tests measure), and socket
/// limits high enough for the burst tests.
pub const TOML: &str = r#"
[server.socket]
max_in_flight = 512
max_buffer_size = 4096

[auth.password.argon2]
memory_kib = 1024
iterations = 1
"#;

pub const PASSWORD: &str = "correct horse battery";

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub token: String,
}

pub async fn register(s: &Server, prefix: &str) -> User {
    let username = unique(prefix);
    let r = reqwest::Client::new()
        .post(s.url("/auth/register"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "register {username}: {body}");
    User {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        username,
        token: body["token"].as_str().unwrap().to_owned(),
    }
}

/// A REST call as `user` (Bearer token); `None` body for GET.
pub async fn call(s: &Server, user: Option<&User>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = match method {
        "GET" => client.get(s.url(path)),
        "POST" => client.post(s.url(path)),
        other => client.request(other.parse().unwrap(), s.url(path)),
    };
    if let Some(u) = user {
        req = req.bearer_auth(&u.token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub async fn rest_send(s: &Server, from: &User, to: &str, text: &str) -> Value {
    let (status, body) = call(
        s,
        Some(from),
        "POST",
        &format!("/chats/{}/send", from.id),
        Some(json!({"receiverId": to, "message": text})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

pub fn texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {messages}"))
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect()
}

pub fn ids(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The first argument of an event or ack payload.
fn first(p: Payload) -> Value {
    match p {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        _ => Value::Null,
    }
}

/// A connected socket and everything it received, in arrival order.
pub struct Sock {
    pub client: Client,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    /// Received but not yet asked for.
    backlog: VecDeque<(String, Value)>,
}

impl Sock {
    pub async fn connect(s: &Server, user: &User) -> Sock {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let ready = Arc::new(Mutex::new(Some(ready_tx)));
        let (on_any, on_error) = (tx.clone(), tx);
        let (ready_ok, ready_err) = (ready.clone(), ready);
        let client = ClientBuilder::new(s.base())
            .auth(json!({"token": user.token}))
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                if let Some(r) = ready_ok.lock().unwrap().take() {
                    let _ = r.send(Ok(()));
                }
                async {}.boxed()
            })
            .on(Event::Error, move |p, _| {
                // The server's `error` event carries an object; the client's own failures
                // (and connect_error) arrive here as text.
                match first(p) {
                    v @ Value::Object(_) => drop(on_error.send(("error".to_owned(), v))),
                    other => {
                        if let Some(r) = ready_err.lock().unwrap().take() {
                            let _ = r.send(Err(other.to_string()));
                        }
                    }
                }
                async {}.boxed()
            })
            .on_any(move |event, p, _| {
                let _ = on_any.send((String::from(event), first(p)));
                async {}.boxed()
            })
            .connect()
            .await
            .expect("socket connects");
        match tokio::time::timeout(WAIT, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("socket for {} did not connect: {other:?}", user.username),
        }
        // No warm-up round trip: events emitted right after the handshake must be handled.
        Sock {
            client,
            rx,
            backlog: VecDeque::new(),
        }
    }

    pub async fn emit(&self, event: &str, data: Value) {
        self.client.emit(event, data).await.expect("emit");
    }

    pub async fn try_ack(&self, event: &str, data: Value, within: Duration) -> Option<Value> {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, data, within, move |p, _| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(first(p));
                }
                async {}.boxed()
            })
            .await
            .expect("emit with ack");
        let ack = tokio::time::timeout(within, rx).await.ok()?.ok()?;
        // An ack's arguments arrive as one array.
        Some(match ack {
            Value::Array(mut a) if a.len() == 1 => a.swap_remove(0),
            other => other,
        })
    }

    /// Emits with an ack callback and returns the ack (panics after [`WAIT`]).
    pub async fn ack(&self, event: &str, data: Value) -> Value {
        self.try_ack(event, data, WAIT)
            .await
            .unwrap_or_else(|| panic!("no ack for {event} within {WAIT:?}"))
    }

    /// The next `event` received, keeping the others for later calls.
    pub async fn next(&mut self, event: &str) -> Value {
        self.try_next(event, WAIT)
            .await
            .unwrap_or_else(|| panic!("no `{event}` within {WAIT:?}; other events: {:?}", self.backlog))
    }

    pub async fn try_next(&mut self, event: &str, within: Duration) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(|(e, _)| e == event) {
            return self.backlog.remove(i).map(|(_, v)| v);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((e, v))) if e == event => return Some(v),
                Ok(Some(other)) => self.backlog.push_back(other),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// `n` events named `event`, in arrival order.
    pub async fn take(&mut self, event: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match self.try_next(event, WAIT).await {
                Some(v) => out.push(v),
                None => panic!("only {i} of {n} `{event}` events arrived"),
            }
        }
        out
    }

    /// Every `event` received so far (drains what has arrived, waits for nothing).
    pub fn drain(&mut self, event: &str) -> Vec<Value> {
        while let Ok(item) = self.rx.try_recv() {
            self.backlog.push_back(item);
        }
        let (hit, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.backlog)
            .into_iter()
            .partition(|(e, _)| e == event);
        self.backlog = rest.into();
        hit.into_iter().map(|(_, v)| v).collect()
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}
