//! Messages: round trips, history pages and cursors, per-pair order, idempotent
//! `clientMsgId`, unknown receivers, `since` pages.

use std::collections::HashMap;

use confab_sdk::futures_util::future::join_all;
use confab_sdk::ids::{is_id, new_id};
use confab_sdk::storage::{Inserted, Message, StorageError, StorageResult, UserRecord};

use super::{Stores, expect_err, history, ids, message, new_user, page, send};

pub(crate) async fn message_round_trip(s: Stores) {
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

pub(crate) async fn pagination(s: Stores) {
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

pub(crate) async fn latest_page(s: Stores) {
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

pub(crate) async fn invalid_cursors(s: Stores) {
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

pub(crate) async fn per_pair_order(s: Stores) {
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

pub(crate) async fn order_at_call_time(s: Stores) {
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

pub(crate) async fn idempotency(s: Stores) {
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

pub(crate) fn check_single(results: &[StorageResult<Inserted>], what: &str) {
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

pub(crate) async fn receiver_not_found(s: Stores) {
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

pub(crate) async fn since_paging(s: Stores) {
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

pub(crate) async fn ping(s: Stores) {
    s.messages.ping().await.expect("ping on an open store");
}
