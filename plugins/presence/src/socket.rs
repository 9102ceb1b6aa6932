//! The socket side: connect/disconnect hooks that count sockets, and the
//! `subscribe_presence` / `unsubscribe_presence` events. Payloads are checked in the
//! synchronous part of the handler, so a bad event is answered at once.

use std::future::ready;
use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::http::from_value;
use confab_sdk::realtime::{Ack, EventHandler, SocketCtx, SocketHook};
use serde_json::{Value, json};

use crate::input::{SubscribePresenceRequest, user_ids};
use crate::service::{Presence, presence_room, to_json};

fn done() -> BoxFuture<'static, ()> {
    Box::pin(ready(()))
}

pub(crate) fn on_connect(presence: Arc<Presence>) -> SocketHook {
    Arc::new(move |ctx: SocketCtx| {
        if let Some(p) = &ctx.principal {
            presence.socket_opened(&ctx.socket.id(), p.user_id());
        }
        done()
    })
}

pub(crate) fn on_disconnect(presence: Arc<Presence>) -> SocketHook {
    Arc::new(move |ctx: SocketCtx| {
        // Sockets without a principal were never counted (see `on_connect`). A socket's
        // principal may be rebound, but only to the same user (`refresh_token`).
        if let Some(p) = &ctx.principal {
            presence.socket_closed(&ctx.socket.id(), p.user_id());
        }
        done()
    })
}

fn parse(ctx: &SocketCtx, data: Value, max: usize) -> Result<Vec<String>, ApiError> {
    ctx.user()?;
    let req: SubscribePresenceRequest = from_value(data)?;
    user_ids(req.user_ids, max)
}

pub(crate) fn subscribe(presence: Arc<Presence>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        let checked = parse(&ctx, data, presence.config.max_ids_per_request).and_then(|ids| {
            let new = presence.watch(&ctx.socket.id(), &ids).map_err(|limit| {
                ApiError::validation("userIds", format!("a socket may watch at most {limit} users"))
            })?;
            Ok((ids, new))
        });
        let (ids, new) = match checked {
            Ok(v) => v,
            Err(e) => {
                ack.fail(&ctx, &e);
                return done();
            }
        };
        // Join before reading, so that no change between the read and the join is missed
        // (one may arrive twice: before the ack and in it).
        for id in &new {
            ctx.socket.join(&presence_room(id));
        }
        let presence = presence.clone();
        Box::pin(async move {
            match presence.store.states(&ids).await {
                Ok(states) if ack.wanted() => {
                    let states: Vec<Value> = states.iter().map(to_json).collect();
                    ack.send(json!({"ok": true, "states": states}));
                }
                // A client without an ack gets the current states as `presence` events.
                Ok(states) => {
                    for s in &states {
                        ctx.socket.emit("presence", &to_json(s));
                    }
                }
                Err(e) => ack.fail(&ctx, &ApiError::from(e)),
            }
        })
    })
}

pub(crate) fn unsubscribe(presence: Arc<Presence>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        match parse(&ctx, data, presence.config.max_ids_per_request) {
            Ok(ids) => {
                for id in presence.unwatch(&ctx.socket.id(), &ids) {
                    ctx.socket.leave(&presence_room(&id));
                }
                ack.send(json!({"ok": true}));
            }
            Err(e) => ack.fail(&ctx, &e),
        }
        done()
    })
}
