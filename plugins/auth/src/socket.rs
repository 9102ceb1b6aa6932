//! `refresh_token {token}`: a long-lived socket renews its credential without
//! reconnecting. The new token must be valid and of the socket's user; the socket then
//! lives as long as it does (the kernel moves its rooms and its expiry).

use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::futures_util::FutureExt;
use confab_sdk::realtime::{Ack, EventHandler, SocketCtx};
use serde_json::{Value, json};

use crate::service::AuthService;

pub fn refresh_token(svc: Arc<AuthService>) -> EventHandler {
    Arc::new(move |ctx: SocketCtx, data: Value, ack: Ack| {
        let svc = svc.clone();
        async move {
            let result = async {
                let current = ctx.user()?.clone();
                let token = data
                    .get("token")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ApiError::validation("token", "token: expected the new JWT as a string"))?;
                let (exp, next) = svc.rebind_socket(&current, token).await?;
                ctx.socket.rebind(next);
                Ok::<_, ApiError>(exp)
            }
            .await;
            match result {
                Ok(exp) => ack.send(json!({"ok": true, "exp": exp})),
                Err(e) => ack.fail(&ctx, &e),
            }
        }
        .boxed()
    })
}
