//! The stream part of the storage contract: every user's positions are 1, 2, 3, ... in
//! commit order, each message appears once in each of its users' streams (once in all for
//! a note to self), pages cover a stream exactly, and the head is the last position.

use std::collections::HashMap;

use confab_sdk::futures_util::future::join_all;
use confab_sdk::storage::{Message, StreamPage};

use super::{Stores, message, new_user};

async fn page(s: &Stores, user: &str, after: u64, limit: usize) -> StreamPage {
    s.messages
        .stream(user, after, limit)
        .await
        .unwrap_or_else(|e| panic!("stream({user}, after {after}, limit {limit}) failed: {e}"))
}

/// The whole stream, read `batch` at a time.
async fn read_all(s: &Stores, user: &str, batch: usize) -> (Vec<Message>, u64) {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let p = page(s, user, after, batch).await;
        assert!(p.messages.len() <= batch, "a page holds at most `limit` messages");
        all.extend(p.messages.iter().cloned());
        if let Some(last) = p.messages.last() {
            after = last
                .clone()
                .seen_by(user)
                .pos
                .expect("a streamed message has a position");
        }
        if !p.has_more {
            return (all, p.head_pos);
        }
    }
}

fn positions(user: &str, messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.pos_for(user).expect("a position")).collect()
}

pub(crate) async fn streams(s: Stores) {
    let (a, b, c) = (
        new_user(&s, "str_a").await,
        new_user(&s, "str_b").await,
        new_user(&s, "str_c").await,
    );
    assert_eq!(page(&s, &b.id, 0, 10).await.head_pos, 0, "a new user's stream is empty");
    let mut sent = Vec::new();
    for (from, to, text) in [(&a, &b, "1"), (&b, &a, "2"), (&a, &a, "note"), (&a, &b, "3")] {
        let i = s.messages.insert(message(from, to, text, None)).await.expect("insert");
        sent.push(i.message);
    }
    // Two senders to one receiver at once: b's positions still come out contiguous.
    let together = join_all((0..20).map(|i| {
        let from = if i % 2 == 0 { &a } else { &c };
        s.messages.insert(message(from, &b, format!("burst {i}"), None))
    }))
    .await;
    sent.extend(together.into_iter().map(|r| r.expect("insert").message));

    for (user, expected) in [(&a, 14), (&b, 23), (&c, 10)] {
        let (stream, head) = read_all(&s, &user.id, 3).await;
        let pos = positions(&user.id, &stream);
        assert_eq!(
            pos,
            (1..=expected).collect::<Vec<u64>>(),
            "{}'s positions are 1..={expected}, each once, in order",
            user.username
        );
        assert_eq!(head, expected, "headPos is the last position");
        // Each streamed message is the stored one, at the position its insert reported.
        let by_id: HashMap<&str, &Message> = sent.iter().map(|m| (m.id.as_str(), m)).collect();
        for m in &stream {
            let stored = by_id.get(m.id.as_str()).expect("only this test's messages");
            assert_eq!(m.positions, stored.positions, "positions as the insert answered them");
        }
    }
    let note = &sent[2];
    let (sp, rp) = note.positions.expect("positions");
    assert_eq!(sp, rp, "a note to self has one position");

    let head_only = page(&s, &b.id, 0, 0).await;
    assert_eq!(
        (head_only.messages.len(), head_only.has_more, head_only.head_pos),
        (0, false, 23),
        "limit 0 answers the head alone"
    );
    let beyond = page(&s, &b.id, 99, 10).await;
    assert_eq!(
        (beyond.messages.len(), beyond.has_more, beyond.head_pos),
        (0, false, 23),
        "a cursor beyond the head answers nothing and the true head"
    );
    let tail = page(&s, &b.id, 21, 10).await;
    assert_eq!(positions(&b.id, &tail.messages), [22, 23]);
    assert!(!tail.has_more);

    // An idempotent repeat answers the original with its original positions.
    let first = s
        .messages
        .insert(message(&c, &a, "once", Some("str-cid")))
        .await
        .expect("insert");
    let again = s
        .messages
        .insert(message(&c, &a, "once", Some("str-cid")))
        .await
        .expect("repeat");
    assert_eq!(
        again.message.positions, first.message.positions,
        "a repeat keeps its positions"
    );
    assert_eq!(page(&s, &a.id, 0, 0).await.head_pos, 15, "a repeat takes no position");
    // History shows the same positions.
    let hist = s
        .messages
        .history(
            &a.id,
            &b.id,
            confab_sdk::storage::PageQuery {
                before: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("history");
    assert!(hist.iter().all(|m| m.positions.is_some()), "history carries positions");

    long_streams(&s).await;
}

/// A stream longer than the SQLite backend's mark interval (64): pages starting and
/// ending on either side of marks cover it exactly.
async fn long_streams(s: &Stores) {
    const N: u64 = 150;
    let (to, x, y) = (
        new_user(s, "str_long").await,
        new_user(s, "str_lx").await,
        new_user(s, "str_ly").await,
    );
    for i in 0..N {
        let from = if i % 3 == 0 { &y } else { &x };
        s.messages
            .insert(message(from, &to, format!("long {i}"), None))
            .await
            .expect("insert");
    }
    for batch in [1, 7, 64, 200] {
        let (all, head) = read_all(s, &to.id, batch).await;
        assert_eq!(positions(&to.id, &all), (1..=N).collect::<Vec<_>>(), "pages of {batch}");
        assert_eq!(head, N);
    }
    for after in [0, 1, 63, 64, 65, 127, 128, 129, 140, 149, 150] {
        let p = page(s, &to.id, after, 10).await;
        let want: Vec<u64> = (after + 1..=(after + 10).min(N)).collect();
        assert_eq!(positions(&to.id, &p.messages), want, "10 after {after}");
        assert_eq!(p.has_more, after + 10 < N, "hasMore after {after}");
        assert_eq!(p.head_pos, N);
    }
    let (xs, x_head) = read_all(s, &x.id, 50).await;
    assert_eq!(x_head, 100, "x sent two thirds");
    assert_eq!(positions(&x.id, &xs), (1..=100).collect::<Vec<_>>());
}
