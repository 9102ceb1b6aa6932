//! Storing one message: the pair's sequence number, the message and the conversation
//! summary. On a replica set the three commit in one transaction (all or nothing); on a
//! standalone server the operator opted in to three separate writes
//! (`storage.mongodb.allow_standalone`, docs/storage-mongodb.md).

use std::time::Instant;

use confab_sdk::backend::repeat_of;
use confab_sdk::ids::new_id;
use confab_sdk::storage::{Inserted, Message, NewMessage, StorageError, StorageResult};
use confab_sdk::time::from_millis;
use mongodb::ClientSession;
use mongodb::bson::Document;
use mongodb::bson::oid::ObjectId;
use mongodb::error::{Error as MongoError, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::ReturnDocument;

use mongodb::action::FindOneAndUpdate;

use crate::{Collections, Shared, backend, existing, is_duplicate_key, queries as q, receiver_exists};

/// The message of one send, checked: sender and receiver ids, and its pair.
struct Send {
    sender: ObjectId,
    receiver: ObjectId,
    pair: String,
    new: NewMessage,
}

pub(super) async fn insert(shared: &Shared, m: NewMessage) -> StorageResult<Inserted> {
    let not_found = || StorageError::NotFound("receiver not found".into());
    let sender = q::oid(&m.sender_id).ok_or_else(|| StorageError::NotFound("sender not found".into()))?;
    let receiver = q::oid(&m.receiver_id).ok_or_else(not_found)?;
    if let Some(cid) = &m.client_msg_id
        && let Some(repeat) = repeat_of(existing(shared, sender, cid).await?)
    {
        return Ok(repeat);
    }
    if !receiver_exists(shared, receiver).await? {
        return Err(not_found());
    }
    let send = Send {
        sender,
        receiver,
        pair: q::pair_key(&m.sender_id, &m.receiver_id),
        new: m,
    };
    let _stripes = lock_users(shared, send.sender, send.receiver).await;
    if shared.transactions {
        in_transaction(shared, &send).await
    } else {
        separate_writes(shared, &send).await
    }
}

/// Takes the stripes of both users, lower index first (no two sends wait on each other
/// in a cycle).
async fn lock_users(shared: &Shared, a: ObjectId, b: ObjectId) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
    let stripe = |id: ObjectId| {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        (h.finish() as usize) % shared.user_stripes.len()
    };
    let (mut x, mut y) = (stripe(a), stripe(b));
    if x > y {
        std::mem::swap(&mut x, &mut y);
    }
    let mut guards = vec![shared.user_stripes[x].lock().await];
    if y != x {
        guards.push(shared.user_stripes[y].lock().await);
    }
    guards
}

/// Takes the pair's next sequence number (creating its conversation document if need
/// be): run it, alone or in a session, for the counter document after the `$inc`.
pub(super) fn take_seq<'a>(
    cols: &'a Collections,
    pair: &str,
    sender: ObjectId,
    receiver: ObjectId,
) -> FindOneAndUpdate<'a, Document> {
    let (filter, update, projection) = q::next_seq(pair, sender, receiver);
    cols.conversations
        .find_one_and_update(filter, update)
        .upsert(true)
        .return_document(ReturnDocument::After)
        .projection(projection)
}

/// Takes the next position of `user`'s stream: run it, alone or in a session, for the
/// stream's document after the `$inc`.
fn take_pos(cols: &Collections, user: ObjectId) -> FindOneAndUpdate<'_, Document> {
    let (filter, update) = q::next_pos(user);
    cols.streams
        .find_one_and_update(filter, update)
        .upsert(true)
        .return_document(ReturnDocument::After)
}

/// The pair's sequence number in the counter document `take_seq` returned.
pub(super) fn seq_of(counter: Option<&Document>) -> StorageResult<i64> {
    let counter = counter.ok_or_else(|| StorageError::Backend("the pair counter was not returned".into()))?;
    counter
        .get_i64("seq")
        .map_err(|e| StorageError::Backend(format!("pair counter: {e}")))
}

fn head_of(doc: Option<Document>) -> StorageResult<u64> {
    doc.and_then(|d| d.get_i64("head").ok())
        .and_then(|h| u64::try_from(h).ok())
        .ok_or_else(|| StorageError::Backend("a stream head was not returned".into()))
}

/// The positions of a send in its sender's and its receiver's streams, taken in user id
/// order (two sends between the same users conflict rather than wait on each other).
async fn take_positions(
    cols: &Collections,
    s: &Send,
    session: Option<&mut ClientSession>,
) -> Result<(u64, u64), AttemptError> {
    positions(cols, s.sender, s.receiver, session).await
}

/// [`take_positions`] for any sender and receiver (the backfill's too).
pub(super) async fn positions(
    cols: &Collections,
    sender: ObjectId,
    receiver: ObjectId,
    mut session: Option<&mut ClientSession>,
) -> Result<(u64, u64), AttemptError> {
    let mut take = async |user: ObjectId| -> Result<u64, AttemptError> {
        let found = match session.as_deref_mut() {
            Some(session) => take_pos(cols, user).session(session).await?,
            None => take_pos(cols, user).await?,
        };
        head_of(found).map_err(AttemptError::Store)
    };
    if sender == receiver {
        let pos = take(sender).await?;
        return Ok((pos, pos));
    }
    if sender < receiver {
        let first = take(sender).await?;
        Ok((first, take(receiver).await?))
    } else {
        let first = take(receiver).await?;
        Ok((take(sender).await?, first))
    }
}

/// The message that takes sequence number `counter.seq` of its pair.
fn message_at(shared: &Shared, s: &Send, counter: &Document, positions: (u64, u64)) -> StorageResult<(Message, i64)> {
    let seq = seq_of(Some(counter))?;
    // Never dated before the pair's last message, so `since` keeps the pair's order even
    // if the wall clock steps back.
    let last_at = counter
        .get_datetime("lastAt")
        .map(|d| d.timestamp_millis())
        .unwrap_or(0);
    let now = shared.clock.now_millis().max(last_at);
    let message = Message {
        id: new_id(now.div_euclid(1000)),
        sender_id: s.sender.to_hex(),
        receiver_id: s.receiver.to_hex(),
        message: s.new.message.clone(),
        client_msg_id: s.new.client_msg_id.clone(),
        created_at: from_millis(now),
        updated_at: from_millis(now),
        pos: None,
        positions: Some(positions),
    };
    Ok((message, seq))
}

/// The message stored by the same `(sender, clientMsgId)` that made this insert collide.
async fn the_original(shared: &Shared, s: &Send, e: MongoError) -> StorageResult<Inserted> {
    let cid = s.new.client_msg_id.as_deref().unwrap_or_default();
    repeat_of(existing(shared, s.sender, cid).await?).ok_or_else(|| backend(e))
}

/// How one transaction attempt ended before its commit.
enum Attempt {
    Stored(Message),
    /// The `(sender, clientMsgId)` index refused the message: another node stored it first.
    Duplicate(MongoError),
}

/// The three writes in one transaction. Transient errors (a write conflict with another
/// node's send to the same pair, an election) retry the whole transaction, and an
/// unknown commit result retries the commit, as the driver's documentation says, until
/// `timeout_ms` has passed.
async fn in_transaction(shared: &Shared, s: &Send) -> StorageResult<Inserted> {
    let deadline = Instant::now() + shared.timeout;
    let mut session = shared.cols.db.client().start_session().await.map_err(backend)?;
    let mut retries = 0u32;
    loop {
        if retries > 0 {
            // Sends to one user from several lanes conflict on that user's stream counter:
            // back off a random while so that they stop colliding.
            let cap_ms = 1u64 << retries.min(6);
            tokio::time::sleep(std::time::Duration::from_micros(rand::random_range(0..cap_ms * 1000))).await;
        }
        retries += 1;
        let attempt = attempt(shared, &mut session, s).await;
        let message = match attempt {
            Ok(Attempt::Stored(message)) => message,
            Ok(Attempt::Duplicate(e)) => {
                let _ = session.abort_transaction().await;
                return the_original(shared, s, e).await;
            }
            Err(e) => {
                // Fails harmlessly when the transaction did not start or is already aborted.
                let _ = session.abort_transaction().await;
                match e {
                    AttemptError::Mongo(e)
                        if e.contains_label(TRANSIENT_TRANSACTION_ERROR) && Instant::now() < deadline =>
                    {
                        tracing::debug!(error = %e, pair = %s.pair, "transient transaction error; retrying");
                        continue;
                    }
                    AttemptError::Mongo(e) => return Err(backend(e)),
                    AttemptError::Store(e) => return Err(e),
                }
            }
        };
        match commit(&mut session, deadline).await {
            Ok(()) => return Ok(Inserted { message, created: true }),
            Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) && Instant::now() < deadline => continue,
            Err(e) => return Err(backend(e)),
        }
    }
}

pub(super) enum AttemptError {
    Mongo(MongoError),
    Store(StorageError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Mongo(e) => e.fmt(f),
            AttemptError::Store(e) => e.fmt(f),
        }
    }
}

impl From<MongoError> for AttemptError {
    fn from(e: MongoError) -> Self {
        AttemptError::Mongo(e)
    }
}

async fn attempt(shared: &Shared, session: &mut ClientSession, s: &Send) -> Result<Attempt, AttemptError> {
    let cols = &shared.cols;
    session.start_transaction().await?;
    let counter = take_seq(cols, &s.pair, s.sender, s.receiver)
        .session(&mut *session)
        .await?
        .ok_or_else(|| AttemptError::Store(StorageError::Backend("the pair counter was not returned".into())))?;
    // Inside the transaction: a concurrent send to the same user conflicts and retries, so
    // a user's positions commit in order.
    let positions = take_positions(cols, s, Some(&mut *session)).await?;
    let (message, seq) = message_at(shared, s, &counter, positions).map_err(AttemptError::Store)?;
    match cols
        .messages
        .insert_one(q::message_doc(&message, &s.pair, seq))
        .session(&mut *session)
        .await
    {
        Ok(_) => {}
        Err(e) if is_duplicate_key(&e) && message.client_msg_id.is_some() => return Ok(Attempt::Duplicate(e)),
        Err(e) => return Err(e.into()),
    }
    // Inside the transaction the counter's document is this pair's summary and no later
    // message can be there; the unread-only fallback is for summaries of older releases.
    let (filter, update) = q::conversation_last(&s.pair, &message, seq);
    let updated = cols
        .conversations
        .update_one(filter, update)
        .session(&mut *session)
        .await?;
    if updated.matched_count == 0 {
        let (filter, update) = q::conversation_unread_only(&s.pair, &message.receiver_id);
        cols.conversations
            .update_one(filter, update)
            .session(&mut *session)
            .await?;
    }
    Ok(Attempt::Stored(message))
}

/// Commits, retrying while the outcome is unknown (the write concern may yet be met).
async fn commit(session: &mut ClientSession, deadline: Instant) -> Result<(), MongoError> {
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && Instant::now() < deadline => {
                tracing::debug!(error = %e, "unknown commit result; committing again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Without transactions (a standalone server, by the operator's choice): the counter, the
/// message, then the summary. A failure between them leaves a gap in the pair's sequence
/// or a summary behind its last message, never a message reported unsent while stored.
async fn separate_writes(shared: &Shared, s: &Send) -> StorageResult<Inserted> {
    let cols = &shared.cols;
    let counter = take_seq(cols, &s.pair, s.sender, s.receiver)
        .await
        .map_err(backend)?
        .ok_or_else(|| StorageError::Backend("the pair counter was not returned".into()))?;
    // Without a transaction a failure after this leaves positions that never commit:
    // clients skip them by `headPos` (DESIGN §4).
    let positions = take_positions(cols, s, None).await.map_err(|e| match e {
        AttemptError::Mongo(e) => backend(e),
        AttemptError::Store(e) => e,
    })?;
    let (message, seq) = message_at(shared, s, &counter, positions)?;
    match cols.messages.insert_one(q::message_doc(&message, &s.pair, seq)).await {
        Ok(_) => {}
        // Another node stored the same (sender, clientMsgId) first; this seq stays a gap.
        Err(e) if is_duplicate_key(&e) && message.client_msg_id.is_some() => return the_original(shared, s, e).await,
        Err(e) => return Err(backend(e)),
    }
    // The message is stored: from here on the sender must hear "sent" (an error would
    // invite a retry that stores it twice). A failed summary update is repeated without
    // its unread `$inc` (which may have been applied), so the pair at least has its last
    // message and is listed; the unread count may then be one short until `mark_read`
    // recounts it.
    if let Err(e) = summary_after_insert(shared, &s.pair, &message, seq).await {
        tracing::warn!(error = %e, pair = %s.pair, "conversation summary update failed; retrying without the unread count");
        let (filter, update) = q::conversation_last_only(&s.pair, &message, seq);
        if let Err(e) = cols.conversations.update_one(filter, update).await {
            tracing::error!(error = %e, pair = %s.pair, "conversation summary not updated after a stored message");
        }
    }
    Ok(Inserted { message, created: true })
}

/// The pair's last message and the receiver's unread count, after an insert.
async fn summary_after_insert(shared: &Shared, pair: &str, message: &Message, seq: i64) -> StorageResult<()> {
    let cols = &shared.cols;
    let (filter, update) = q::conversation_last(pair, message, seq);
    let updated = cols.conversations.update_one(filter, update).await.map_err(backend)?;
    if updated.matched_count == 0 {
        let (filter, update) = q::conversation_unread_only(pair, &message.receiver_id);
        cols.conversations.update_one(filter, update).await.map_err(backend)?;
    }
    Ok(())
}
