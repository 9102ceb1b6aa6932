//! Conversations and read cursors: newest first, unread counts, pages, `mark_read`.

use confab_sdk::storage::StorageError;

use super::{Stores, expect_err, new_user, send};

pub(crate) async fn conversations(s: Stores) {
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

pub(crate) async fn conversation_pages(s: Stores) {
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

pub(crate) async fn mark_read(s: Stores) {
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
