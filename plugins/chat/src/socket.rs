//! The socket events. Each handler checks its payload in the synchronous part (so a bad
//! event is answered at once and the socket stays usable), and does the I/O in the
//! returned future. Errors go to the ack when the client passed one, else to an `error`
//! event on the socket (clients of the old backend never pass acks).

use std::future::ready;
use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::http::from_value;
use confab_sdk::realtime::{Ack, EventHandler, SocketCtx};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::input::{self, FetchHistoryRequest, MarkReadRequest, SendMessageRequest, SyncRequest, TypingRequest};
use crate::service::{Chat, TypingEvent, to_json};

fn done() -> BoxFuture<'static, ()> {
    Box::pin(ready(()))
}

/// The caller and the parsed payload, or the error already reported to the client.
fn accept<T: DeserializeOwned>(ctx: &SocketCtx, data: Value) -> Result<(String, T), ApiError> {
    let user = ctx.user()?.user_id().to_owned();
    Ok((user, from_value(data)?))
}

/// The checked input and the ack to answer with, or `None` once the error was reported.
fn checked<T>(ctx: &SocketCtx, ack: Ack, input: Result<T, ApiError>) -> Option<(T, Ack)> {
    match input {
        Ok(v) => Some((v, ack)),
        Err(e) => {
            ack.fail(ctx, &e);
            None
        }
    }
}

/// `{ok: true, <key>: value}` without copying `value`.
fn ok_with(key: &str, value: Value) -> Value {
    let mut m = Map::with_capacity(2);
    m.insert("ok".to_owned(), Value::Bool(true));
    m.insert(key.to_owned(), value);
    Value::Object(m)
}

/// `{ok: true, ...fields}` for an object serialization.
fn ok_merged(value: Value) -> Value {
    match value {
        Value::Object(mut m) => {
            m.insert("ok".to_owned(), Value::Bool(true));
            Value::Object(m)
        }
        other => ok_with("result", other),
    }
}

pub(crate) fn send_message(chat: Arc<Chat>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        // Synchronous on purpose: the write is queued in the order the events arrived.
        let pending = accept::<SendMessageRequest>(&ctx, data).and_then(|(user, req)| chat.begin_send(user, req));
        let Some((pending, ack)) = checked(&ctx, ack, pending) else {
            return done();
        };
        Box::pin(async move {
            match pending.finish().await {
                Ok(sent) if ack.wanted() => ack.send(ok_with("message", sent.json)),
                // A client without acks learns of its new message from `message_sent` (sent
                // to all its sockets); a retried one gets it on this socket only.
                Ok(sent) if !sent.created => drop(ctx.socket.emit("message_sent", &sent.json)),
                Ok(_) => {}
                Err(e) => ack.fail(&ctx, &e),
            }
        })
    })
}

pub(crate) fn fetch_history(chat: Arc<Chat>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        let Some(((user, req), ack)) = checked(&ctx, ack, accept::<FetchHistoryRequest>(&ctx, data)) else {
            return done();
        };
        let chat = chat.clone();
        Box::pin(async move {
            match chat.history(&user, req).await {
                Ok(messages) => {
                    // The old backend's clients listen for `chat_history`; new ones may ack.
                    let json = to_json(&messages);
                    ctx.socket.emit("chat_history", &json);
                    ack.send(ok_with("messages", json));
                }
                Err(e) => ack.fail(&ctx, &e),
            }
        })
    })
}

pub(crate) fn typing(chat: Arc<Chat>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        let input = accept::<TypingRequest>(&ctx, data)
            .and_then(|(user, req)| Ok((user, input::id("to", req.to)?, req.is_typing)));
        let Some(((from, to, is_typing), ack)) = checked(&ctx, ack, input) else {
            return done();
        };
        let chat = chat.clone();
        Box::pin(async move {
            // No existence check: emitting to an unknown id reaches nobody, and a lookup per
            // keystroke would cost more than the emit itself. Typing to oneself is not echoed.
            if to != from {
                let event = to_json(&TypingEvent { from: &from, is_typing });
                chat.emitter.to_user(&to, "typing", &event).await;
            }
            ack.send(serde_json::json!({"ok": true}));
        })
    })
}

pub(crate) fn mark_read(chat: Arc<Chat>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        let Some(((user, req), ack)) = checked(&ctx, ack, accept::<MarkReadRequest>(&ctx, data)) else {
            return done();
        };
        let chat = chat.clone();
        Box::pin(async move {
            match chat.mark_read(&user, req).await {
                Ok(state) => ack.send(ok_merged(to_json(&state))),
                Err(e) => ack.fail(&ctx, &e),
            }
        })
    })
}

pub(crate) fn sync(chat: Arc<Chat>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        if !ack.wanted() {
            // The answer can only travel in the ack; say so rather than do the work for nobody.
            ack.fail(
                &ctx,
                &ApiError::validation("ack", "sync answers through its ack: pass an ack callback"),
            );
            return done();
        }
        // No payload at all means "from the beginning".
        let data = if data.is_null() {
            Value::Object(Map::new())
        } else {
            data
        };
        let Some(((user, req), ack)) = checked(&ctx, ack, accept::<SyncRequest>(&ctx, data)) else {
            return done();
        };
        let chat = chat.clone();
        Box::pin(async move {
            match chat.sync(&user, req).await {
                Ok(result) => ack.send(to_json(&result)),
                Err(e) => ack.fail(&ctx, &e),
            }
        })
    })
}
