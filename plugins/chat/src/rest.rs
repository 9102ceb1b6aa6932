//! REST routes under `/chats/{userId}`. Every route authenticates, and `{userId}` must be
//! the caller (else 403): only the two participants can read a conversation.

use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::auth::{Principal, SharedAuthenticator};
use confab_sdk::http::json_body;
use confab_sdk::salvo::http::StatusCode;
use confab_sdk::salvo::prelude::*;

use crate::input::{self, FetchHistoryRequest, MarkReadRequest, SendMessageRequest};
use crate::service::Chat;

#[derive(Clone)]
pub(crate) struct Rest {
    chat: Arc<Chat>,
    auth: SharedAuthenticator,
}

pub(crate) fn router(chat: Arc<Chat>, auth: SharedAuthenticator) -> Router {
    let r = Rest { chat, auth };
    Router::with_path("chats/{userId}")
        .push(Router::with_path("with/{withUser}").get(History(r.clone())))
        .push(Router::with_path("send").post(SendRoute(r.clone())))
        .push(Router::with_path("conversations").get(Conversations(r.clone())))
        .push(Router::with_path("read").post(Read(r)))
}

impl Rest {
    /// The caller, who must be the `{userId}` of the path.
    async fn caller(&self, req: &Request) -> Result<Principal, ApiError> {
        let principal = self.auth.authenticate(req.headers()).await?;
        let path_user = req.param::<String>("userId").unwrap_or_default();
        if !path_user.eq_ignore_ascii_case(principal.user_id()) {
            return Err(ApiError::forbidden("you can only access your own chats"));
        }
        Ok(principal)
    }
}

/// Renders `result` as JSON with `status`, or the error.
fn reply<T: serde::Serialize + Send>(res: &mut Response, status: StatusCode, result: Result<T, ApiError>) {
    match result {
        Ok(v) => {
            res.status_code(status);
            res.render(Json(v));
        }
        Err(e) => res.render(e),
    }
}

/// A query parameter; an empty one (`?before=`) counts as absent.
fn query(req: &Request, name: &str) -> Option<String> {
    req.query::<String>(name).filter(|s| !s.is_empty())
}

struct History(Rest);

#[async_trait]
impl Handler for History {
    async fn handle(&self, req: &mut Request, _: &mut Depot, res: &mut Response, _: &mut FlowCtrl) {
        let result = async {
            let me = self.0.caller(req).await?;
            let cfg = &self.0.chat.config;
            let page = FetchHistoryRequest {
                with_user: req.param::<String>("withUser").unwrap_or_default(),
                before: query(req, "before"),
                after: query(req, "after"),
                limit: Some(input::limit_param(query(req, "limit"), cfg.page_default, cfg.page_max)? as u64),
            };
            self.0.chat.history(me.user_id(), page).await
        }
        .await;
        reply(res, StatusCode::OK, result);
    }
}

struct SendRoute(Rest);

#[async_trait]
impl Handler for SendRoute {
    async fn handle(&self, req: &mut Request, _: &mut Depot, res: &mut Response, _: &mut FlowCtrl) {
        let result = async {
            let me = self.0.caller(req).await?;
            let body = json_body::<SendMessageRequest>(req).await?;
            let pending = self.0.chat.begin_send(me.user_id().to_owned(), body)?;
            // Spawned: a client hanging up must not cancel the delivery of a stored message.
            tokio::spawn(pending.finish()).await.map_err(ApiError::internal)?
        }
        .await;
        match result {
            Ok(sent) => {
                res.status_code(if sent.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                });
                res.render(Json(sent.json));
            }
            Err(e) => res.render(e),
        }
    }
}

struct Conversations(Rest);

#[async_trait]
impl Handler for Conversations {
    async fn handle(&self, req: &mut Request, _: &mut Depot, res: &mut Response, _: &mut FlowCtrl) {
        let result = async {
            let me = self.0.caller(req).await?;
            let cfg = &self.0.chat.config;
            let limit = input::limit_param(query(req, "limit"), cfg.conversations_default, cfg.conversations_max)?;
            let before = input::opt_id("before", query(req, "before"))?;
            // One more than asked tells whether another page follows.
            let mut list = self
                .0
                .chat
                .messages
                .conversations(me.user_id(), before.as_deref(), limit + 1)
                .await?;
            let more = list.len() > limit;
            list.truncate(limit);
            Ok((list, more))
        }
        .await;
        // The body stays a bare array (old clients); whether more follow is a header.
        if let Ok((_, more)) = &result {
            let _ = res.add_header(HAS_MORE, if *more { "true" } else { "false" }, true);
        }
        reply(res, StatusCode::OK, result.map(|(list, _)| list));
    }
}

/// Response header of the conversation list: `true` when another page follows.
pub(crate) const HAS_MORE: &str = "x-has-more";

struct Read(Rest);

#[async_trait]
impl Handler for Read {
    async fn handle(&self, req: &mut Request, _: &mut Depot, res: &mut Response, _: &mut FlowCtrl) {
        let result = async {
            let me = self.0.caller(req).await?;
            let body = json_body::<MarkReadRequest>(req).await?;
            self.0.chat.mark_read(me.user_id(), body).await
        }
        .await;
        reply(res, StatusCode::OK, result);
    }
}
