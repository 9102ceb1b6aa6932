//! Per-user streams on MongoDB: each message holds its position in the sender's stream
//! (`senderPos`) and the receiver's (`receiverPos`), taken from the user's counter in
//! `streams` inside the message's transaction (insert.rs), so a user's positions commit in
//! order. Messages stored before streams existed get theirs from [`backfill`].

use confab_sdk::futures_util::TryStreamExt;
use confab_sdk::storage::{Message, StorageError, StorageResult, StreamPage};
use mongodb::bson::{Document, doc};

use crate::{Collections, backend, queries as q};

async fn head(cols: &Collections, user: mongodb::bson::oid::ObjectId) -> StorageResult<u64> {
    let found = cols.streams.find_one(doc! {"_id": user}).await.map_err(backend)?;
    Ok(found
        .and_then(|d| d.get_i64("head").ok())
        .and_then(|h| u64::try_from(h).ok())
        .unwrap_or(0))
}

/// `user`'s stream after `after`: the head first, then only positions up to it, which have
/// all committed (a position commits with its message), so the page is one consistent cut.
pub(super) async fn page(cols: &Collections, user: &str, after: u64, limit: usize) -> StorageResult<StreamPage> {
    let empty = |head_pos| StreamPage {
        messages: Vec::new(),
        has_more: false,
        head_pos,
    };
    let Some(uid) = q::oid(user) else {
        return Ok(empty(0));
    };
    let head = head(cols, uid).await?;
    if limit == 0 || after >= head {
        return Ok(empty(head));
    }
    let range = doc! {"$gt": after as i64, "$lte": head as i64};
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let half = |filter: Document, sort: Document| async move {
        let docs: Vec<Document> = cols
            .messages
            .find(filter)
            .sort(sort)
            .limit(fetch)
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        docs.iter()
            .map(q::message_from_doc)
            .collect::<StorageResult<Vec<Message>>>()
    };
    let mut messages = half(
        doc! {"senderId": uid, "senderPos": range.clone()},
        doc! {"senderPos": 1},
    )
    .await?;
    // A note to self is in the sender half already.
    messages.extend(
        half(
            doc! {"receiverId": uid, "receiverPos": range, "senderId": {"$ne": uid}},
            doc! {"receiverPos": 1},
        )
        .await?,
    );
    Ok(StreamPage::from_halves(user, messages, limit, head))
}

/// Gives every stored message without positions its positions, in stored order
/// (`createdAt`, `_id`), continuing each user's stream. Idempotent: a message is updated
/// only while it has none. A run interrupted between a counter and its message leaves a
/// position that never commits, which clients skip (`headPos`). Messages of the old
/// backend get theirs once `confab migrate` has given them a pair.
pub(crate) async fn backfill(cols: &Collections) -> StorageResult<u64> {
    let mut done = 0;
    let mut cursor = cols
        .messages
        .find(doc! {"senderPos": {"$exists": false}, "pair": {"$exists": true}})
        .sort(doc! {"createdAt": 1, "_id": 1})
        .allow_disk_use(true)
        .await
        .map_err(backend)?;
    while let Some(d) = cursor.try_next().await.map_err(backend)? {
        let Ok(m) = q::message_from_doc(&d) else { continue };
        let (Some(id), Some(sender), Some(receiver)) = (q::oid(&m.id), q::oid(&m.sender_id), q::oid(&m.receiver_id))
        else {
            continue;
        };
        let (sender_pos, receiver_pos) = crate::insert::positions(cols, sender, receiver, None)
            .await
            .map_err(|e| StorageError::Backend(format!("stream backfill: {e}")))?;
        cols.messages
            .update_one(
                doc! {"_id": id, "senderPos": {"$exists": false}},
                doc! {"$set": {"senderPos": sender_pos as i64, "receiverPos": receiver_pos as i64}},
            )
            .await
            .map_err(backend)?;
        done += 1;
    }
    Ok(done)
}

/// At boot: [`backfill`] once per database (a `settings` flag records that it ran).
pub(super) async fn backfill_once(cols: &Collections) -> StorageResult<()> {
    let settings = cols.db.collection::<Document>(q::SETTINGS);
    let flag = doc! {"_id": q::STREAMS_BACKFILLED};
    if settings.find_one(flag.clone()).await.map_err(backend)?.is_some() {
        return Ok(());
    }
    let n = backfill(cols).await?;
    if n > 0 {
        tracing::info!(messages = n, "gave the stored messages their stream positions");
    }
    match settings
        .insert_one(doc! {"_id": q::STREAMS_BACKFILLED, "value": true})
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if crate::is_duplicate_key(&e) => Ok(()),
        Err(e) => Err(backend(e)),
    }
}
