//! The storage contract: what every backend of `UserStore` + `MessageStore` must do.
//!
//! A backend's tests implement [`ContractBackend`] and call [`run_all`]. Each check uses
//! users with fresh random names, so checks neither see nor disturb each other's data and
//! can run against a database that already holds data. A failing check panics with its
//! name and what was expected.

use std::fmt::Debug;

mod conversations;
mod messages;
mod reopen;
mod state;
mod streams;
mod users;

use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::storage::{Message, NewMessage, NewUser, PageQuery, StorageError, StorageResult, Stores, UserRecord};

/// A backend under test.
pub trait ContractBackend: Sync {
    /// Opens the store. Opening again after `MessageStore::close` must reopen the same
    /// data (a restart of the server).
    fn open(&self) -> BoxFuture<'_, Stores>;
}

/// One named check of [`CHECKS`].
pub type Check = fn(Stores) -> BoxFuture<'static, ()>;

/// Every check that needs one open store, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("usernames are unique case-insensitively", |s| {
        Box::pin(users::unique_usernames(s))
    }),
    ("users are found by id and by name", |s| Box::pin(users::user_lookup(s))),
    ("password hash updates", |s| Box::pin(users::password_hash(s))),
    ("inserted messages round-trip", |s| {
        Box::pin(messages::message_round_trip(s))
    }),
    ("pagination covers every message once, both ways", |s| {
        Box::pin(messages::pagination(s))
    }),
    ("latest page without cursors", |s| Box::pin(messages::latest_page(s))),
    ("invalid cursors are refused by name", |s| {
        Box::pin(messages::invalid_cursors(s))
    }),
    ("per-pair order under concurrent inserts", |s| {
        Box::pin(messages::per_pair_order(s))
    }),
    ("order is fixed when insert is called", |s| {
        Box::pin(messages::order_at_call_time(s))
    }),
    ("idempotent clientMsgId", |s| Box::pin(messages::idempotency(s))),
    ("receiver not found", |s| Box::pin(messages::receiver_not_found(s))),
    ("conversations newest first with unread counts", |s| {
        Box::pin(conversations::conversations(s))
    }),
    ("conversations page with before and limit", |s| {
        Box::pin(conversations::conversation_pages(s))
    }),
    ("mark_read moves forward only", |s| {
        Box::pin(conversations::mark_read(s))
    }),
    ("since pages with hasMore", |s| Box::pin(messages::since_paging(s))),
    ("ping", |s| Box::pin(messages::ping(s))),
    ("state records: put, replace, delete, expiry, kinds apart", |s| {
        Box::pin(state::state_records(s))
    }),
    ("streams: contiguous positions per user, pages, head, repeats", |s| {
        Box::pin(streams::streams(s))
    }),
];

/// Runs every check, then closes the store and checks that a reopened one still holds
/// everything.
pub async fn run_all(backend: &impl ContractBackend) {
    let stores = backend.open().await;
    for (name, check) in CHECKS {
        println!("storage contract: {name}");
        check(stores.clone()).await;
    }
    println!("storage contract: data survives a reopen");
    reopen::survives_reopen(backend, stores).await;
    println!("storage contract: all {} checks passed", CHECKS.len() + 1);
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

pub(crate) async fn new_user(s: &Stores, prefix: &str) -> UserRecord {
    let name = unique(prefix);
    s.users
        .create_user(NewUser {
            username: name.clone(),
            display_name: None,
            password_hash: "hash".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("create_user({name}) failed: {e}"))
}

pub(crate) fn message(
    from: &UserRecord,
    to: &UserRecord,
    text: impl Into<String>,
    client_msg_id: Option<&str>,
) -> NewMessage {
    NewMessage {
        sender_id: from.id.clone(),
        receiver_id: to.id.clone(),
        message: text.into(),
        client_msg_id: client_msg_id.map(str::to_owned),
    }
}

pub(crate) async fn send(s: &Stores, from: &UserRecord, to: &UserRecord, text: impl Into<String>) -> Message {
    let text = text.into();
    let inserted = s
        .messages
        .insert(message(from, to, text.clone(), None))
        .await
        .unwrap_or_else(|e| panic!("insert of {text:?} failed: {e}"));
    assert!(inserted.created, "a message without clientMsgId must be created");
    inserted.message
}

pub(crate) fn page(before: Option<&str>, after: Option<&str>, limit: usize) -> PageQuery {
    PageQuery {
        before: before.map(str::to_owned),
        after: after.map(str::to_owned),
        limit,
    }
}

pub(crate) async fn history(s: &Stores, a: &UserRecord, b: &UserRecord, q: PageQuery) -> Vec<Message> {
    let what = format!("history(before={:?}, after={:?}, limit={})", q.before, q.after, q.limit);
    s.messages
        .history(&a.id, &b.id, q)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

pub(crate) fn ids(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.id.as_str()).collect()
}

pub(crate) fn expect_err<T: Debug>(result: StorageResult<T>, want: StorageError, what: &str) {
    match result {
        Err(e) if e == want => {}
        other => panic!("{what}: expected Err({want:?}), got {other:?}"),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
