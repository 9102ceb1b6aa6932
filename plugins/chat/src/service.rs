//! The chat operations shared by the socket events and the REST routes.

use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::realtime::SharedEmitter;
use confab_sdk::storage::{Inserted, Message, PageQuery, ReadState, SharedMessageStore, StorageResult};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::ChatConfig;
use crate::input::{self, FetchHistoryRequest, MarkReadRequest, SendMessageRequest, SyncRequest};
use crate::lanes::{Lanes, Turn};

pub(crate) struct Chat {
    pub messages: SharedMessageStore,
    pub emitter: SharedEmitter,
    pub config: ChatConfig,
    lanes: Arc<Lanes>,
}

/// A send whose write is queued: it resolves after the commit and the delivery.
pub(crate) struct PendingSend {
    chat: Arc<Chat>,
    turn: Turn,
    commit: BoxFuture<'static, StorageResult<Inserted>>,
    /// With a clientMsgId: the receiver and text asked for, to tell a repeat from a reuse.
    asked: Option<(String, String)>,
}

/// A committed message, serialized once for every ack, emit and response.
pub(crate) struct Sent {
    pub json: Value,
    /// False for an idempotent repeat (already stored; not delivered again).
    pub created: bool,
}

/// `messages_read`: `by` read `withUser`'s messages up to `upTo`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagesRead<'a> {
    pub by: &'a str,
    pub with_user: &'a str,
    pub up_to: &'a str,
    /// RFC 3339 UTC with milliseconds.
    #[schema(value_type = String, format = DateTime)]
    pub read_at: Option<String>,
}

/// `typing` as the receiver sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingEvent<'a> {
    /// Who is typing.
    pub from: &'a str,
    pub is_typing: bool,
}

/// `sync`'s answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    #[schema(value_type = bool, example = true)]
    pub ok: bool,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// More messages follow: sync again from the last one.
    pub has_more: bool,
    /// The last position of my stream when this answer was read (absent for a sync by
    /// `after`, which reads no stream). With `hasMore` false, a client sets its last
    /// position to it: positions in between were never committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_pos: Option<u64>,
}

impl Chat {
    pub(crate) fn new(messages: SharedMessageStore, emitter: SharedEmitter, config: ChatConfig) -> Arc<Self> {
        Arc::new(Chat {
            messages,
            emitter,
            config,
            lanes: Lanes::new(),
        })
    }

    /// Checks the request and queues the write *now*, in the caller's order (this is what
    /// keeps per-pair send order); the returned send finishes asynchronously.
    pub(crate) fn begin_send(
        self: &Arc<Self>,
        sender: String,
        req: SendMessageRequest,
    ) -> Result<PendingSend, ApiError> {
        let lane = self.lanes.key(&sender);
        let message = input::new_message(sender, req, &self.config)?;
        let asked = message
            .client_msg_id
            .is_some()
            .then(|| (message.receiver_id.clone(), message.message.clone()));
        let (turn, commit) = self.lanes.enter(lane, || self.messages.insert(message));
        Ok(PendingSend {
            chat: self.clone(),
            turn,
            commit,
            asked,
        })
    }

    /// Emits `messages_read` to both users, unless nothing has been read yet.
    async fn announce_read(&self, state: &ReadState) {
        let Some(up_to) = state.up_to.as_deref() else {
            return;
        };
        let event = MessagesRead {
            by: &state.user_id,
            with_user: &state.partner_id,
            up_to,
            read_at: state.read_at.as_ref().map(confab_sdk::time::format),
        };
        let json = to_json(&event);
        self.emitter.to_user(&state.user_id, "messages_read", &json).await;
        if state.partner_id != state.user_id {
            self.emitter.to_user(&state.partner_id, "messages_read", &json).await;
        }
    }

    pub(crate) async fn mark_read(&self, user: &str, req: MarkReadRequest) -> Result<ReadState, ApiError> {
        let with_user = input::id("withUser", req.with_user)?;
        let up_to = input::opt_id("upTo", req.up_to)?;
        let state = self.messages.mark_read(user, &with_user, up_to.as_deref()).await?;
        self.announce_read(&state).await;
        Ok(state)
    }

    pub(crate) async fn history(&self, user: &str, req: FetchHistoryRequest) -> Result<Vec<Message>, ApiError> {
        let page = self.history_page(user, req).await?;
        Ok(page.into_iter().map(|m| m.seen_by(user)).collect())
    }

    async fn history_page(&self, user: &str, req: FetchHistoryRequest) -> Result<Vec<Message>, ApiError> {
        let with_user = input::id("withUser", req.with_user)?;
        let page = PageQuery {
            before: input::opt_id("before", req.before)?,
            after: input::opt_id("after", req.after)?,
            limit: input::limit("limit", req.limit, self.config.page_default, self.config.page_max)?,
        };
        Ok(self.messages.history(user, &with_user, page).await?)
    }

    pub(crate) async fn sync(&self, user: &str, req: SyncRequest) -> Result<SyncResult, ApiError> {
        let limit = match req.limit {
            Some(0) => 0,
            given => input::limit("limit", given, self.config.sync_default, self.config.sync_max)?,
        };
        if let Some(after_pos) = req.after_pos {
            let page = self.messages.stream(user, after_pos, limit).await?;
            return Ok(SyncResult {
                ok: true,
                messages: page.messages.into_iter().map(|m| m.seen_by(user)).collect(),
                has_more: page.has_more,
                head_pos: Some(page.head_pos),
            });
        }
        if limit == 0 {
            // `sync {limit: 0}`: the head alone, where a new device starts.
            let page = self.messages.stream(user, 0, 0).await?;
            return Ok(SyncResult {
                ok: true,
                messages: Vec::new(),
                has_more: false,
                head_pos: Some(page.head_pos),
            });
        }
        let after = input::opt_id("after", req.after)?;
        let (messages, has_more) = self.messages.since(user, after.as_deref(), limit).await?;
        Ok(SyncResult {
            ok: true,
            messages: messages.into_iter().map(|m| m.seen_by(user)).collect(),
            has_more,
            head_pos: None,
        })
    }
}

impl PendingSend {
    /// Waits for the commit, then (in the sender's lane order) delivers a new message:
    /// `receive_message` to every socket of the receiver, `message_sent` to every socket of
    /// the sender. A repeat is not delivered again. Emits never wait for a slow receiver:
    /// a socket whose buffer is full is closed (`Emitter::stream_to_user`) and syncs later.
    pub(crate) async fn finish(self) -> Result<Sent, ApiError> {
        let PendingSend {
            chat,
            mut turn,
            commit,
            asked,
        } = self;
        let committed = commit.await;
        turn.wait().await;
        let Inserted { message, created } = committed?;
        // A clientMsgId reused for another message (a client whose ids restarted, say) must
        // not be answered "sent" with the old message: the new one would be lost unseen.
        if let Some((receiver, text)) = asked
            && !created
            && (message.receiver_id != receiver || message.message != text)
        {
            let mut e = ApiError::conflict("clientMsgId was already used for a different message");
            e.field = Some("clientMsgId".to_owned());
            return Err(e);
        }
        // Each side is shown its own stream position.
        let json = to_json(&message.clone().seen_by(&message.sender_id));
        if created {
            // A note to self: the receiver's sockets are the sender's, which get message_sent.
            if message.receiver_id != message.sender_id {
                let received = message.clone().seen_by(&message.receiver_id);
                let pos = received.pos.unwrap_or_default();
                chat.emitter
                    .stream_to_user(&message.receiver_id, pos, "receive_message", &to_json(&received))
                    .await;
            }
            let pos = message.pos_for(&message.sender_id).unwrap_or_default();
            chat.emitter
                .stream_to_user(&message.sender_id, pos, "message_sent", &json)
                .await;
        }
        drop(turn);
        Ok(Sent { json, created })
    }
}

/// Serializes an API type; these types always serialize, so a failure is a bug worth a log.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| {
        confab_sdk::tracing::error!(error = %e, "cannot serialize a chat payload");
        Value::Null
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use confab_sdk::async_trait;
    use confab_sdk::error::ErrorCode;
    use confab_sdk::realtime::Emitter;
    use confab_sdk::storage::{Conversation, MessageStore, NewMessage, StorageError};
    use confab_sdk::time::from_millis;

    use super::*;

    const ALICE: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const BOB: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    /// Stores in call order but lets later commits answer first (the worst case for order).
    #[derive(Default)]
    struct FakeStore {
        stored: Mutex<Vec<Message>>,
        by_client_id: Mutex<HashMap<(String, String), Message>>,
        calls: Mutex<u64>,
    }

    #[async_trait]
    impl MessageStore for FakeStore {
        fn insert(&self, m: NewMessage) -> BoxFuture<'static, StorageResult<Inserted>> {
            let n = {
                let mut c = self.calls.lock().unwrap();
                *c += 1;
                *c
            };
            let key = m.client_msg_id.clone().map(|c| (m.sender_id.clone(), c));
            let existing = key
                .as_ref()
                .and_then(|k| self.by_client_id.lock().unwrap().get(k).cloned());
            let result = match existing {
                Some(message) => Ok(Inserted {
                    message,
                    created: false,
                }),
                None if m.receiver_id == "cccccccccccccccccccccccc" => {
                    Err(StorageError::NotFound("receiver not found".into()))
                }
                None => {
                    let message = Message {
                        id: format!("{n:024x}"),
                        sender_id: m.sender_id,
                        receiver_id: m.receiver_id,
                        message: m.message,
                        client_msg_id: m.client_msg_id,
                        created_at: from_millis(0),
                        updated_at: from_millis(0),
                        pos: None,
                        positions: None,
                    };
                    self.stored.lock().unwrap().push(message.clone());
                    if let Some(k) = key {
                        self.by_client_id.lock().unwrap().insert(k, message.clone());
                    }
                    Ok(Inserted { message, created: true })
                }
            };
            Box::pin(async move {
                tokio::time::sleep(Duration::from_micros(3000u64.saturating_sub(n * 10))).await;
                result
            })
        }
        async fn history(&self, _: &str, _: &str, _: PageQuery) -> StorageResult<Vec<Message>> {
            Ok(Vec::new())
        }
        async fn since(&self, _: &str, _: Option<&str>, _: usize) -> StorageResult<(Vec<Message>, bool)> {
            Ok((Vec::new(), false))
        }
        async fn stream(&self, _: &str, _: u64, _: usize) -> StorageResult<confab_sdk::storage::StreamPage> {
            Err(StorageError::Busy)
        }
        async fn conversations(&self, _: &str, _: Option<&str>, _: usize) -> StorageResult<Vec<Conversation>> {
            Ok(Vec::new())
        }
        async fn mark_read(&self, _: &str, _: &str, _: Option<&str>) -> StorageResult<ReadState> {
            Err(StorageError::Busy)
        }
        async fn ping(&self) -> StorageResult<()> {
            Ok(())
        }
        async fn close(&self) {}
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Value)>>);

    #[async_trait]
    impl Emitter for Recorder {
        async fn to_user(&self, user_id: &str, event: &str, data: &Value) {
            self.0
                .lock()
                .unwrap()
                .push((user_id.to_owned(), event.to_owned(), data.clone()));
        }
        async fn to_room(&self, _: &str, _: &str, _: &Value) {}
        async fn end_credential(&self, _: &str, _: &confab_sdk::auth::CredentialId, _: &str, _: &str) {}
        fn local_sockets(&self) -> usize {
            0
        }
    }

    fn setup() -> (Arc<Chat>, Arc<FakeStore>, Arc<Recorder>) {
        let store = Arc::new(FakeStore::default());
        let rec = Arc::new(Recorder::default());
        (Chat::new(store.clone(), rec.clone(), ChatConfig::default()), store, rec)
    }

    fn req(to: &str, text: &str, client_msg_id: Option<&str>) -> SendMessageRequest {
        SendMessageRequest {
            receiver_id: to.into(),
            message: text.into(),
            client_msg_id: client_msg_id.map(Into::into),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn deliveries_follow_storage_order_even_when_commits_answer_out_of_order() {
        let (chat, store, rec) = setup();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                tokio::spawn(
                    chat.begin_send(ALICE.into(), req(BOB, &format!("m{i}"), None))
                        .unwrap()
                        .finish(),
                )
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap().created);
        }
        let stored: Vec<String> = store.stored.lock().unwrap().iter().map(|m| m.message.clone()).collect();
        let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        assert_eq!(stored, expected);
        let events = rec.0.lock().unwrap();
        for (user, event) in [(BOB, "receive_message"), (ALICE, "message_sent")] {
            let got: Vec<String> = events
                .iter()
                .filter(|(u, e, _)| u == user && e == event)
                .map(|(_, _, v)| v["message"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, expected, "{event}");
        }
    }

    #[tokio::test]
    async fn repeats_are_not_delivered_and_notes_to_self_are_delivered_once() {
        let (chat, _, rec) = setup();
        let first = chat
            .begin_send(ALICE.into(), req(BOB, "hi", Some("c1")))
            .unwrap()
            .finish()
            .await
            .unwrap();
        let again = chat
            .begin_send(ALICE.into(), req(BOB, "hi", Some("c1")))
            .unwrap()
            .finish()
            .await
            .unwrap();
        assert!(first.created && !again.created);
        assert_eq!(first.json["_id"], again.json["_id"]);
        for reused in [req(BOB, "something else", Some("c1")), req(ALICE, "hi", Some("c1"))] {
            let e = chat
                .begin_send(ALICE.into(), reused)
                .unwrap()
                .finish()
                .await
                .err()
                .unwrap();
            assert_eq!(e.code, ErrorCode::Conflict, "{e}");
        }
        assert_eq!(
            rec.0.lock().unwrap().len(),
            2,
            "one receive_message and one message_sent"
        );
        rec.0.lock().unwrap().clear();
        chat.begin_send(ALICE.into(), req(ALICE, "note", None))
            .unwrap()
            .finish()
            .await
            .unwrap();
        let events: Vec<(String, String)> = rec
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(u, e, _)| (u.clone(), e.clone()))
            .collect();
        assert_eq!(events, [(ALICE.to_owned(), "message_sent".to_owned())]);
    }

    #[tokio::test]
    async fn failures_reach_the_sender_and_nobody_else() {
        let (chat, _, rec) = setup();
        let e = chat
            .begin_send(ALICE.into(), req("cccccccccccccccccccccccc", "hi", None))
            .unwrap()
            .finish()
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, confab_sdk::ErrorCode::NotFound);
        let e = chat
            .mark_read(
                ALICE,
                MarkReadRequest {
                    with_user: BOB.into(),
                    up_to: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, confab_sdk::ErrorCode::Unavailable);
        assert!(rec.0.lock().unwrap().is_empty());
    }
}
