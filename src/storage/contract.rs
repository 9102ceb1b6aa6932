//! The storage contract: what every backend of `UserStore` + `MessageStore` must do.
//!
//! A backend's tests implement [`ContractBackend`] and call [`run_all`]. Each check uses
//! users with fresh random names, so checks neither see nor disturb each other's data and
//! can run against a database that already holds data. A failing check panics with its
//! name and what was expected.

use std::collections::HashMap;
use std::fmt::Debug;

mod streams;

use confab_sdk::futures_util::future::{BoxFuture, join_all};
use confab_sdk::ids::{is_id, new_id};
use confab_sdk::storage::{
    Inserted, Message, NewMessage, NewUser, PageQuery, SharedMessageStore, SharedStateStore, SharedUserStore,
    StateEntry, StorageError, StorageResult, UserRecord,
};

/// A backend under test.
pub trait ContractBackend: Sync {
    /// Opens the store. Opening again after `MessageStore::close` must reopen the same
    /// data (a restart of the server).
    fn open(&self) -> BoxFuture<'_, Stores>;
}

/// The faces of one opened store.
#[derive(Clone)]
pub struct Stores {
    pub users: SharedUserStore,
    pub messages: SharedMessageStore,
    pub state: SharedStateStore,
}

/// One named check of [`CHECKS`].
pub type Check = fn(Stores) -> BoxFuture<'static, ()>;

/// Every check that needs one open store, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("usernames are unique case-insensitively", |s| {
        Box::pin(unique_usernames(s))
    }),
    ("users are found by id and by name", |s| Box::pin(user_lookup(s))),
    ("password hash updates", |s| Box::pin(password_hash(s))),
    ("inserted messages round-trip", |s| Box::pin(message_round_trip(s))),
    ("pagination covers every message once, both ways", |s| {
        Box::pin(pagination(s))
    }),
    ("latest page without cursors", |s| Box::pin(latest_page(s))),
    ("invalid cursors are refused by name", |s| Box::pin(invalid_cursors(s))),
    ("per-pair order under concurrent inserts", |s| {
        Box::pin(per_pair_order(s))
    }),
    ("order is fixed when insert is called", |s| {
        Box::pin(order_at_call_time(s))
    }),
    ("idempotent clientMsgId", |s| Box::pin(idempotency(s))),
    ("receiver not found", |s| Box::pin(receiver_not_found(s))),
    ("conversations newest first with unread counts", |s| {
        Box::pin(conversations(s))
    }),
    ("conversations page with before and limit", |s| {
        Box::pin(conversation_pages(s))
    }),
    ("mark_read moves forward only", |s| Box::pin(mark_read(s))),
    ("since pages with hasMore", |s| Box::pin(since_paging(s))),
    ("ping", |s| Box::pin(ping(s))),
    ("state records: put, replace, delete, expiry, kinds apart", |s| {
        Box::pin(state_records(s))
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
    survives_reopen(backend, stores).await;
    println!("storage contract: all {} checks passed", CHECKS.len() + 1);
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

async fn new_user(s: &Stores, prefix: &str) -> UserRecord {
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

fn message(from: &UserRecord, to: &UserRecord, text: impl Into<String>, client_msg_id: Option<&str>) -> NewMessage {
    NewMessage {
        sender_id: from.id.clone(),
        receiver_id: to.id.clone(),
        message: text.into(),
        client_msg_id: client_msg_id.map(str::to_owned),
    }
}

async fn send(s: &Stores, from: &UserRecord, to: &UserRecord, text: impl Into<String>) -> Message {
    let text = text.into();
    let inserted = s
        .messages
        .insert(message(from, to, text.clone(), None))
        .await
        .unwrap_or_else(|e| panic!("insert of {text:?} failed: {e}"));
    assert!(inserted.created, "a message without clientMsgId must be created");
    inserted.message
}

fn page(before: Option<&str>, after: Option<&str>, limit: usize) -> PageQuery {
    PageQuery {
        before: before.map(str::to_owned),
        after: after.map(str::to_owned),
        limit,
    }
}

async fn history(s: &Stores, a: &UserRecord, b: &UserRecord, q: PageQuery) -> Vec<Message> {
    let what = format!("history(before={:?}, after={:?}, limit={})", q.before, q.after, q.limit);
    s.messages
        .history(&a.id, &b.id, q)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

fn ids(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.id.as_str()).collect()
}

fn expect_err<T: Debug>(result: StorageResult<T>, want: StorageError, what: &str) {
    match result {
        Err(e) if e == want => {}
        other => panic!("{what}: expected Err({want:?}), got {other:?}"),
    }
}

async fn unique_usernames(s: Stores) {
    let name = unique("Alice");
    let created = s
        .users
        .create_user(NewUser {
            username: name.clone(),
            display_name: Some("Alice".into()),
            password_hash: "h".into(),
        })
        .await
        .expect("create_user with a fresh name");
    assert!(
        is_id(&created.id),
        "user id must be 24 hex digits, got {:?}",
        created.id
    );
    assert_eq!(created.username, name, "the username keeps its case");
    assert_eq!(
        created.created_at, created.updated_at,
        "a new user has createdAt == updatedAt"
    );
    for taken in [name.clone(), name.to_uppercase(), name.to_lowercase()] {
        let again = s
            .users
            .create_user(NewUser {
                username: taken.clone(),
                display_name: None,
                password_hash: "h".into(),
            })
            .await;
        expect_err(
            again,
            StorageError::Conflict("username is taken".into()),
            &format!("create_user({taken}) after {name}"),
        );
    }
    let other = new_user(&s, "alicia").await;
    assert_ne!(other.id, created.id, "two users must get distinct ids");
}

async fn user_lookup(s: Stores) {
    let name = unique("Bob");
    let created = s
        .users
        .create_user(NewUser {
            username: name.clone(),
            display_name: Some("Bob B.".into()),
            password_hash: "h1".into(),
        })
        .await
        .expect("create_user");
    let by_id = s.users.user_by_id(&created.id).await.expect("user_by_id");
    assert_eq!(by_id.as_ref(), Some(&created), "user_by_id returns the stored user");
    for spelled in [name.clone(), name.to_uppercase(), name.to_lowercase()] {
        let found = s.users.user_by_username(&spelled).await.expect("user_by_username");
        assert_eq!(
            found.as_ref(),
            Some(&created),
            "user_by_username({spelled}) is case-insensitive"
        );
    }
    let plain = new_user(&s, "plain").await;
    let found = s
        .users
        .user_by_id(&plain.id)
        .await
        .expect("user_by_id")
        .expect("stored user");
    assert_eq!(found.display_name, None, "a missing displayName stays missing");
    assert_eq!(
        s.users.user_by_id(&new_id(0)).await.expect("user_by_id"),
        None,
        "unknown id"
    );
    assert_eq!(
        s.users
            .user_by_username(&unique("nobody"))
            .await
            .expect("user_by_username"),
        None,
        "unknown name"
    );
}

async fn password_hash(s: Stores) {
    let user = new_user(&s, "carol").await;
    s.users
        .set_password_hash(&user.id, "new-hash")
        .await
        .expect("set_password_hash");
    let stored = s
        .users
        .user_by_id(&user.id)
        .await
        .expect("user_by_id")
        .expect("user exists");
    assert_eq!(stored.password_hash, "new-hash", "the new hash is stored");
    assert!(stored.updated_at >= user.updated_at, "updatedAt never moves back");
    assert_eq!(stored.username, user.username, "other fields are kept");
    expect_err(
        s.users.set_password_hash(&new_id(0), "x").await,
        StorageError::NotFound("user not found".into()),
        "set_password_hash on an unknown user",
    );
}

async fn message_round_trip(s: Stores) {
    let (a, b) = (new_user(&s, "rt_a").await, new_user(&s, "rt_b").await);
    let inserted = s
        .messages
        .insert(message(&a, &b, "hello ✓ \"quoted\"\nline", Some("client-1")))
        .await
        .expect("insert");
    let m = &inserted.message;
    assert!(inserted.created, "first insert creates");
    assert!(is_id(&m.id), "message id must be 24 hex digits, got {:?}", m.id);
    assert_eq!(
        (m.sender_id.as_str(), m.receiver_id.as_str()),
        (a.id.as_str(), b.id.as_str())
    );
    assert_eq!(m.message, "hello ✓ \"quoted\"\nline", "the text is stored as given");
    assert_eq!(m.client_msg_id.as_deref(), Some("client-1"));
    assert_eq!(m.created_at, m.updated_at, "a new message has createdAt == updatedAt");
    assert_eq!(
        m.created_at.timestamp_subsec_nanos() % 1_000_000,
        0,
        "times have millisecond precision"
    );
    let plain = send(&s, &b, &a, "no client id").await;
    assert_eq!(plain.client_msg_id, None);
    let stored = history(&s, &a, &b, page(None, None, 10)).await;
    assert_eq!(
        stored,
        vec![m.clone(), plain],
        "history returns exactly what insert returned"
    );
}

async fn pagination(s: Stores) {
    const N: usize = 137;
    const PAGE: usize = 10;
    let (a, b) = (new_user(&s, "page_a").await, new_user(&s, "page_b").await);
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        let (from, to) = if i % 3 == 0 { (&b, &a) } else { (&a, &b) };
        sent.push(send(&s, from, to, format!("m{i}")).await);
    }
    // Noise in another conversation of the same users must never show up.
    let c = new_user(&s, "page_c").await;
    send(&s, &a, &c, "elsewhere").await;
    let all = ids(&sent);

    // Forwards from the first message.
    let mut forward: Vec<Message> = Vec::new();
    let mut cursor = sent[0].id.clone();
    loop {
        let p = history(&s, &a, &b, page(None, Some(&cursor), PAGE)).await;
        if p.is_empty() {
            break;
        }
        assert!(
            p.len() <= PAGE,
            "a page holds at most `limit` messages, got {}",
            p.len()
        );
        cursor = p.last().expect("non-empty").id.clone();
        forward.extend(p);
    }
    assert_eq!(
        ids(&forward),
        all[1..].to_vec(),
        "paging forwards with `after` yields every later message once, in order"
    );

    // Backwards from the newest page, from the other participant's side.
    let mut pages: Vec<Vec<Message>> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let p = history(&s, &b, &a, page(before.as_deref(), None, PAGE)).await;
        if p.is_empty() {
            break;
        }
        before = Some(p[0].id.clone());
        pages.push(p);
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == PAGE),
        "full pages until the oldest: {sizes:?}"
    );
    assert_eq!(
        sizes.last(),
        Some(&(N % PAGE)),
        "the oldest page holds the remainder: {sizes:?}"
    );
    let backward: Vec<Message> = pages.into_iter().rev().flatten().collect();
    assert_eq!(
        ids(&backward),
        all,
        "paging backwards with `before` yields every message once, oldest first"
    );
    assert_eq!(backward, sent, "pages return the stored messages unchanged");

    // Both cursors: just after `after`, bounded by `before`.
    let between = history(&s, &a, &b, page(Some(&sent[20].id), Some(&sent[10].id), 100)).await;
    assert_eq!(
        ids(&between),
        all[11..20].to_vec(),
        "after+before returns the messages strictly between"
    );
    let between = history(&s, &a, &b, page(Some(&sent[20].id), Some(&sent[10].id), 4)).await;
    assert_eq!(
        ids(&between),
        all[11..15].to_vec(),
        "after+before with a small limit starts right after `after`"
    );
    let newest = history(&s, &a, &b, page(None, Some(&sent[N - 1].id), PAGE)).await;
    assert!(newest.is_empty(), "nothing follows the newest message");
    let oldest = history(&s, &a, &b, page(Some(&sent[0].id), None, PAGE)).await;
    assert!(oldest.is_empty(), "nothing precedes the oldest message");
}

async fn latest_page(s: Stores) {
    let (a, b) = (new_user(&s, "latest_a").await, new_user(&s, "latest_b").await);
    assert!(
        history(&s, &a, &b, page(None, None, 10)).await.is_empty(),
        "an empty conversation has no page"
    );
    let mut sent = Vec::new();
    for i in 0..25 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        sent.push(send(&s, from, to, format!("latest {i}")).await);
    }
    let all = ids(&sent);
    let latest = history(&s, &a, &b, page(None, None, 10)).await;
    assert_eq!(
        ids(&latest),
        all[15..].to_vec(),
        "no cursor: the newest `limit` messages, oldest first"
    );
    let everything = history(&s, &b, &a, page(None, None, 1000)).await;
    assert_eq!(
        ids(&everything),
        all,
        "a limit above the count returns the whole conversation"
    );
}

async fn invalid_cursors(s: Stores) {
    let (a, b, c) = (
        new_user(&s, "cur_a").await,
        new_user(&s, "cur_b").await,
        new_user(&s, "cur_c").await,
    );
    let ours = send(&s, &a, &b, "ours").await;
    let theirs = send(&s, &b, &c, "theirs").await;
    let unknown = new_id(1_700_000_000);
    for bad in [unknown.as_str(), theirs.id.as_str(), "not-an-id"] {
        expect_err(
            s.messages.history(&a.id, &b.id, page(Some(bad), None, 10)).await,
            StorageError::InvalidCursor("before".into()),
            &format!("history before={bad}"),
        );
        expect_err(
            s.messages.history(&a.id, &b.id, page(None, Some(bad), 10)).await,
            StorageError::InvalidCursor("after".into()),
            &format!("history after={bad}"),
        );
        expect_err(
            s.messages.mark_read(&a.id, &b.id, Some(bad)).await,
            StorageError::InvalidCursor("upTo".into()),
            &format!("mark_read upTo={bad}"),
        );
    }
    expect_err(
        s.messages.since(&a.id, Some(&unknown), 10).await,
        StorageError::InvalidCursor("after".into()),
        "since with an unknown cursor",
    );
    expect_err(
        s.messages.since(&a.id, Some(&theirs.id), 10).await,
        StorageError::InvalidCursor("after".into()),
        "since with a message the user neither sent nor received",
    );
    let (after_ours, more) = s
        .messages
        .since(&a.id, Some(&ours.id), 10)
        .await
        .expect("since with a valid cursor");
    assert!(
        after_ours.is_empty() && !more,
        "nothing follows the user's newest message"
    );
}

async fn per_pair_order(s: Stores) {
    const TASKS: usize = 16;
    const EACH: usize = 40;
    let hub = new_user(&s, "hub").await;
    let mut senders = Vec::new();
    for _ in 0..TASKS {
        senders.push(new_user(&s, "order").await);
    }
    let tasks: Vec<_> = senders
        .iter()
        .cloned()
        .map(|sender| {
            let (s, hub) = (s.clone(), hub.clone());
            tokio::spawn(async move {
                for i in 0..EACH {
                    // Alternate directions: order must hold for the pair, not per direction.
                    let (from, to) = if i % 4 == 3 { (&hub, &sender) } else { (&sender, &hub) };
                    send(&s, from, to, format!("{i}")).await;
                }
            })
        })
        .collect();
    for t in join_all(tasks).await {
        t.expect("an inserting task panicked");
    }
    for sender in &senders {
        let stored = history(&s, sender, &hub, page(None, None, EACH * 2)).await;
        let texts: Vec<&str> = stored.iter().map(|m| m.message.as_str()).collect();
        let expected: Vec<String> = (0..EACH).map(|i| i.to_string()).collect();
        assert_eq!(texts, expected, "messages of one pair are stored in send order");
    }
    let (everything, more) = s.messages.since(&hub.id, None, TASKS * EACH + 10).await.expect("since");
    assert!(!more, "since with a large limit has nothing more");
    assert_eq!(
        everything.len(),
        TASKS * EACH,
        "since(hub) sees every message to or from the hub"
    );
    let mut next: HashMap<&str, usize> = HashMap::new();
    for m in &everything {
        let partner = if m.sender_id == hub.id {
            m.receiver_id.as_str()
        } else {
            m.sender_id.as_str()
        };
        let n = next.entry(partner).or_default();
        assert_eq!(m.message, n.to_string(), "since keeps each pair's order");
        *n += 1;
    }
}

async fn order_at_call_time(s: Stores) {
    const N: usize = 100;
    let (a, b) = (new_user(&s, "call_a").await, new_user(&s, "call_b").await);
    // Every insert is called before any is awaited: the call fixes the order.
    let futures: Vec<_> = (0..N)
        .map(|i| s.messages.insert(message(&a, &b, format!("{i}"), None)))
        .collect();
    let results: Vec<StorageResult<Inserted>> = join_all(futures.into_iter().rev()).await;
    assert!(
        results.iter().all(Result::is_ok),
        "every insert succeeds: {:?}",
        results.iter().find(|r| r.is_err())
    );
    let stored = history(&s, &a, &b, page(None, None, N)).await;
    let texts: Vec<String> = stored.iter().map(|m| m.message.clone()).collect();
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(
        texts, expected,
        "insert order is the order of the calls, not of the awaits"
    );
}

async fn idempotency(s: Stores) {
    let (a, b) = (new_user(&s, "idem_a").await, new_user(&s, "idem_b").await);
    let first = s
        .messages
        .insert(message(&a, &b, "once", Some("cid-1")))
        .await
        .expect("first insert");
    let again = s
        .messages
        .insert(message(&a, &b, "once", Some("cid-1")))
        .await
        .expect("repeat insert");
    assert!(
        first.created && !again.created,
        "created is true for the first insert only"
    );
    assert_eq!(
        again.message, first.message,
        "a repeat returns the first stored message"
    );

    // Repeats called together (one batch on a group-commit backend).
    let together = join_all((0..3).map(|_| s.messages.insert(message(&a, &b, "batched", Some("cid-2"))))).await;
    check_single(&together, "repeats called back to back");

    // Repeats from concurrent tasks.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let m = s.messages.clone();
            let msg = message(&a, &b, "raced", Some("cid-3"));
            tokio::spawn(async move { m.insert(msg).await })
        })
        .collect();
    let raced: Vec<_> = join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
    check_single(&raced, "repeats from concurrent tasks");

    // The key is (sender, clientMsgId): the same id from the other user is another message.
    let other = s
        .messages
        .insert(message(&b, &a, "theirs", Some("cid-1")))
        .await
        .expect("insert");
    assert!(
        other.created && other.message.id != first.message.id,
        "clientMsgId is scoped to the sender"
    );

    let stored = history(&s, &a, &b, page(None, None, 100)).await;
    let texts: Vec<&str> = stored.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(
        texts,
        ["once", "batched", "raced", "theirs"],
        "each clientMsgId is stored once"
    );
    let conv = s
        .messages
        .conversations(&b.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(conv[0].unread, 3, "repeats do not count as unread");
}

fn check_single(results: &[StorageResult<Inserted>], what: &str) {
    let ok: Vec<&Inserted> = results
        .iter()
        .map(|r| r.as_ref().unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect();
    let created = ok.iter().filter(|i| i.created).count();
    assert_eq!(created, 1, "{what}: exactly one call creates the message");
    assert!(
        ok.iter().all(|i| i.message == ok[0].message),
        "{what}: every call returns the same message"
    );
}

async fn receiver_not_found(s: Stores) {
    let (a, b) = (new_user(&s, "nf_a").await, new_user(&s, "nf_b").await);
    let ghost = UserRecord {
        id: new_id(1_700_000_000),
        ..b.clone()
    };
    expect_err(
        s.messages
            .insert(message(&a, &ghost, "to nobody", None))
            .await
            .map(|i| i.message),
        StorageError::NotFound("receiver not found".into()),
        "insert to an unknown receiver",
    );
    // A failing insert among good ones (one batch on a group-commit backend) fails alone.
    let calls = vec![
        s.messages.insert(message(&a, &b, "before", None)),
        s.messages.insert(message(&a, &ghost, "lost", Some("ghost-1"))),
        s.messages.insert(message(&a, &b, "after", None)),
    ];
    let results = join_all(calls).await;
    assert!(
        results[0].is_ok() && results[2].is_ok(),
        "good inserts next to a bad one succeed: {results:?}"
    );
    assert!(
        matches!(results[1], Err(StorageError::NotFound(_))),
        "the bad one fails: {:?}",
        results[1]
    );
    let (mine, _) = s.messages.since(&a.id, None, 10).await.expect("since");
    let texts: Vec<&str> = mine.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["before", "after"], "nothing of the failed insert is stored");
    let conv = s
        .messages
        .conversations(&a.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(conv.len(), 1, "no conversation with an unknown user");
    // The failed clientMsgId was not consumed.
    let retry = s
        .messages
        .insert(message(&a, &b, "retried", Some("ghost-1")))
        .await
        .expect("insert");
    assert!(retry.created, "a clientMsgId whose insert failed is still free");
}

async fn conversations(s: Stores) {
    let (a, b, c) = (
        new_user(&s, "conv_a").await,
        new_user(&s, "conv_b").await,
        new_user(&s, "conv_c").await,
    );
    assert!(
        s.messages
            .conversations(&a.id, None, 1000)
            .await
            .expect("conversations")
            .is_empty(),
        "a new user has none"
    );
    send(&s, &a, &b, "a to b").await;
    send(&s, &b, &a, "b to a 1").await;
    let last_ab = send(&s, &b, &a, "b to a 2").await;
    send(&s, &c, &a, "c to a").await;
    let last_ac = send(&s, &a, &c, "a to c").await;

    let list = s
        .messages
        .conversations(&a.id, None, 1000)
        .await
        .expect("conversations");
    let partners: Vec<&str> = list.iter().map(|c| c.partner.as_str()).collect();
    assert_eq!(partners, [c.id.as_str(), b.id.as_str()], "newest conversation first");
    assert_eq!(
        list[0].last_message, last_ac,
        "lastMessage is the newest message either way"
    );
    assert_eq!(list[0].last_at, last_ac.created_at, "lastAt is the time of lastMessage");
    assert_eq!(list[0].unread, 1, "a has one unread message from c");
    assert_eq!(list[1].last_message, last_ab);
    assert_eq!(list[1].unread, 2, "a has two unread messages from b");

    let of_b = s
        .messages
        .conversations(&b.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(of_b.len(), 1);
    assert_eq!(
        (of_b[0].partner.as_str(), of_b[0].unread),
        (a.id.as_str(), 1),
        "b has one unread message from a"
    );
    assert_eq!(of_b[0].last_message, last_ab, "both sides share lastMessage");
    let of_c = s
        .messages
        .conversations(&c.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(of_c[0].unread, 1, "the sender's own messages are never unread");

    let newest = send(&s, &a, &b, "a to b again").await;
    let list = s
        .messages
        .conversations(&a.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(list[0].partner, b.id, "a new message moves its conversation to the top");
    assert_eq!(list[0].last_message, newest);
    assert_eq!(list[0].unread, 2, "sending does not change the sender's unread count");
}

async fn conversation_pages(s: Stores) {
    let me = new_user(&s, "pages_me").await;
    let mut newest_first = Vec::new();
    for i in 0..5 {
        let partner = new_user(&s, &format!("pages_{i}")).await;
        send(&s, &partner, &me, "hello").await;
        newest_first.insert(0, partner.id);
    }
    let first = s.messages.conversations(&me.id, None, 2).await.expect("first page");
    assert_eq!(first.len(), 2, "limit caps the page");
    let mut seen: Vec<String> = first.iter().map(|c| c.partner.clone()).collect();
    let mut cursor = first.last().map(|c| c.last_message.id.clone());
    while let Some(before) = cursor {
        let page = s
            .messages
            .conversations(&me.id, Some(&before), 2)
            .await
            .expect("next page");
        seen.extend(page.iter().map(|c| c.partner.clone()));
        cursor = (page.len() == 2).then(|| page[1].last_message.id.clone());
    }
    assert_eq!(seen, newest_first, "pages cover every conversation once, newest first");

    // A cursor must be a message to or from the user.
    let (x, y) = (new_user(&s, "pages_x").await, new_user(&s, "pages_y").await);
    let foreign = send(&s, &x, &y, "not yours").await;
    for bad in [foreign.id.as_str(), "ffffffffffffffffffffffff"] {
        expect_err(
            s.messages.conversations(&me.id, Some(bad), 2).await,
            StorageError::InvalidCursor("before".into()),
            "a foreign or unknown conversation cursor",
        );
    }
}

async fn mark_read(s: Stores) {
    let (a, b) = (new_user(&s, "read_a").await, new_user(&s, "read_b").await);
    let empty = s
        .messages
        .mark_read(&a.id, &b.id, None)
        .await
        .expect("mark_read without messages");
    assert_eq!(
        (empty.up_to.as_deref(), empty.read_at, empty.unread),
        (None, None, 0),
        "nothing to read yet"
    );
    assert_eq!(
        (empty.user_id.as_str(), empty.partner_id.as_str()),
        (a.id.as_str(), b.id.as_str())
    );

    let mut from_b = Vec::new();
    for i in 0..5 {
        from_b.push(send(&s, &b, &a, format!("b{i}")).await);
    }
    let state = s
        .messages
        .mark_read(&a.id, &b.id, Some(&from_b[2].id))
        .await
        .expect("mark_read upTo");
    assert_eq!(
        state.up_to.as_deref(),
        Some(from_b[2].id.as_str()),
        "the cursor moves to upTo"
    );
    assert_eq!(state.unread, 2, "two messages remain unread after upTo");
    assert!(state.read_at.is_some(), "readAt is set when the cursor moves");
    let unread_of = |list: Vec<confab_sdk::storage::Conversation>| list[0].unread;
    assert_eq!(
        unread_of(
            s.messages
                .conversations(&a.id, None, 1000)
                .await
                .expect("conversations")
        ),
        2
    );

    let back = s
        .messages
        .mark_read(&a.id, &b.id, Some(&from_b[0].id))
        .await
        .expect("mark_read backwards");
    assert_eq!(back.up_to, state.up_to, "the cursor never moves back");
    assert_eq!(
        (back.unread, back.read_at),
        (2, state.read_at),
        "a backwards mark_read changes nothing"
    );

    let all = s
        .messages
        .mark_read(&a.id, &b.id, None)
        .await
        .expect("mark_read to the newest");
    assert_eq!(
        all.up_to.as_deref(),
        Some(from_b[4].id.as_str()),
        "no upTo: up to the newest message"
    );
    assert_eq!(all.unread, 0);
    assert_eq!(
        unread_of(
            s.messages
                .conversations(&a.id, None, 1000)
                .await
                .expect("conversations")
        ),
        0
    );

    send(&s, &b, &a, "b5").await;
    let own = send(&s, &a, &b, "a0").await;
    assert_eq!(
        unread_of(
            s.messages
                .conversations(&a.id, None, 1000)
                .await
                .expect("conversations")
        ),
        1,
        "one new from b"
    );
    let other_side = s
        .messages
        .mark_read(&b.id, &a.id, Some(&from_b[1].id))
        .await
        .expect("b marks read");
    assert_eq!(other_side.unread, 1, "b's unread counts a's messages only");
    let caught_up = s.messages.mark_read(&a.id, &b.id, None).await.expect("mark_read");
    assert_eq!(
        caught_up.up_to.as_deref(),
        Some(own.id.as_str()),
        "the newest message may be one's own"
    );
    assert_eq!(caught_up.unread, 0);
    let of_b = s
        .messages
        .conversations(&b.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(of_b[0].unread, 1, "a's read cursor does not touch b's unread count");
}

async fn since_paging(s: Stores) {
    const N: usize = 27;
    let (u, p, q) = (
        new_user(&s, "sync_u").await,
        new_user(&s, "sync_p").await,
        new_user(&s, "sync_q").await,
    );
    let (fresh, more) = s.messages.since(&u.id, None, 10).await.expect("since");
    assert!(fresh.is_empty() && !more, "a new user has nothing to sync");
    let mut mine = Vec::new();
    for i in 0..N {
        let m = match i % 3 {
            0 => send(&s, &u, &p, format!("{i}")).await,
            1 => send(&s, &q, &u, format!("{i}")).await,
            _ => send(&s, &p, &u, format!("{i}")).await,
        };
        mine.push(m);
        send(&s, &p, &q, "not involving u").await;
    }
    let mut synced = Vec::new();
    let mut after: Option<String> = None;
    let mut flags = Vec::new();
    loop {
        let (batch, more) = s.messages.since(&u.id, after.as_deref(), 10).await.expect("since");
        assert!(batch.len() <= 10, "at most `limit` messages");
        flags.push(more);
        if let Some(last) = batch.last() {
            after = Some(last.id.clone());
        }
        synced.extend(batch);
        if !more {
            break;
        }
    }
    assert_eq!(flags, [true, true, false], "hasMore is true until the last page");
    assert_eq!(
        synced, mine,
        "since yields every message to or from the user once, oldest first"
    );
    let (exact, more) = s
        .messages
        .since(&u.id, Some(&mine[N - 11].id), 10)
        .await
        .expect("since");
    assert_eq!(
        (exact.len(), more),
        (10, false),
        "hasMore is false when exactly `limit` remain"
    );
}

async fn ping(s: Stores) {
    s.messages.ping().await.expect("ping on an open store");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn state_records(s: Stores) {
    let (kind, other) = (unique("kind"), unique("other"));
    let now = now_ms();
    let later = now + 60_000;
    s.state.put_state(&kind, "a", "one", later).await.expect("put a");
    s.state.put_state(&kind, "b", "two", later).await.expect("put b");
    s.state
        .put_state(&kind, "gone", "old", now - 1)
        .await
        .expect("put an expired record");
    s.state
        .put_state(&other, "a", "elsewhere", later)
        .await
        .expect("put in another kind");
    s.state
        .put_state(&kind, "a", "replaced", later + 1)
        .await
        .expect("replace a");
    s.state.delete_state(&kind, "b").await.expect("delete b");
    s.state
        .delete_state(&kind, "never")
        .await
        .expect("deleting a missing record is fine");
    let mut loaded = s.state.load_state(&kind, now).await.expect("load");
    loaded.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        loaded,
        [StateEntry {
            key: "a".into(),
            value: "replaced".into(),
            expires_ms: later + 1,
        }],
        "the replaced record only: deleted, expired and other kinds' records are not loaded"
    );
    assert!(
        s.state.load_state(&kind, later + 1).await.expect("load").is_empty(),
        "a record is gone at its expiry"
    );
}

async fn survives_reopen(backend: &impl ContractBackend, s: Stores) {
    let kind = unique("kept");
    let until = now_ms() + 3_600_000;
    s.state.put_state(&kind, "k", "v", until).await.expect("put_state");
    let secret = s.users.deployment_secret().await.expect("deployment_secret");
    assert!(
        secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "256 bits in hex"
    );
    let (a, b) = (new_user(&s, "keep_a").await, new_user(&s, "keep_b").await);
    s.users
        .set_password_hash(&a.id, "kept-hash")
        .await
        .expect("set_password_hash");
    let mut sent = Vec::new();
    for i in 0..30 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let cid = format!("keep-{i}");
        let inserted = s
            .messages
            .insert(message(from, to, format!("{i}"), Some(&cid)))
            .await
            .expect("insert");
        sent.push(inserted.message);
    }
    let read = s
        .messages
        .mark_read(&a.id, &b.id, Some(&sent[19].id))
        .await
        .expect("mark_read");
    // Queued just before close: close must still commit it.
    let last = s.messages.insert(message(&a, &b, "last", None));
    s.messages.close().await;
    let last = last.await.expect("an insert queued before close commits");
    sent.push(last.message);
    expect_err(
        s.messages
            .insert(message(&a, &b, "too late", None))
            .await
            .map(|i| i.message),
        StorageError::Closed,
        "insert after close",
    );

    let r = backend.open().await;
    assert_eq!(
        r.messages.stream(&a.id, 0, 0).await.expect("stream").head_pos,
        31,
        "stream positions survive a reopen (a sent or got all 31 messages)"
    );
    assert_eq!(
        r.users.deployment_secret().await.expect("deployment_secret"),
        secret,
        "the deployment secret survives a reopen"
    );
    assert_eq!(
        r.state.load_state(&kind, now_ms()).await.expect("load_state"),
        [StateEntry {
            key: "k".into(),
            value: "v".into(),
            expires_ms: until,
        }],
        "state records survive a reopen"
    );
    let user = r.users.user_by_id(&a.id).await.expect("user_by_id").expect("user kept");
    assert_eq!(
        user.password_hash, "kept-hash",
        "the user and its password hash are kept"
    );
    assert_eq!(
        r.users
            .user_by_username(&b.username.to_uppercase())
            .await
            .expect("lookup")
            .map(|u| u.id),
        Some(b.id.clone())
    );
    let stored = history(&r, &a, &b, page(None, None, 100)).await;
    assert_eq!(stored, sent, "every message is kept, in order");
    let (synced, more) = r.messages.since(&b.id, None, 100).await.expect("since");
    assert_eq!((synced, more), (sent.clone(), false), "since sees the kept messages");
    let conv = r
        .messages
        .conversations(&a.id, None, 1000)
        .await
        .expect("conversations");
    assert_eq!(conv[0].last_message, sent[30], "lastMessage is kept");
    assert_eq!(conv[0].unread, 5, "a's unread count (odd messages after #19) is kept");
    let again = r
        .messages
        .mark_read(&a.id, &b.id, Some(&sent[3].id))
        .await
        .expect("mark_read");
    assert_eq!(
        (again.up_to, again.read_at),
        (read.up_to, read.read_at),
        "the read cursor is kept"
    );
    let repeat = r
        .messages
        .insert(message(&a, &b, "0", Some("keep-0")))
        .await
        .expect("insert");
    assert!(
        !repeat.created && repeat.message == sent[0],
        "idempotency keys are kept"
    );
    send(&r, &b, &a, "after reopen").await;
    r.messages.close().await;
}
