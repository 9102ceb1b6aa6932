//! What a restart keeps: every message, user, cursor, key, position and state record.

use confab_sdk::storage::{StateEntry, StorageError};

use super::{ContractBackend, Stores, expect_err, history, message, new_user, now_ms, page, send, unique};

pub(crate) async fn survives_reopen(backend: &impl ContractBackend, s: Stores) {
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
