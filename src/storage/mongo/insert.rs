//! Storing one message: the pair's sequence number, the message and the conversation
//! summary. On a replica set the three commit in one transaction (all or nothing); on a
//! standalone server the operator opted in to three separate writes
//! (`storage.mongodb.allow_standalone`, docs/storage-mongodb.md).

use std::time::Instant;

use confab_sdk::ids::new_id;
use confab_sdk::storage::{Inserted, Message, NewMessage, StorageError, StorageResult};
use confab_sdk::time::from_millis;
use mongodb::ClientSession;
use mongodb::bson::Document;
use mongodb::bson::oid::ObjectId;
use mongodb::error::{Error as MongoError, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::ReturnDocument;

use mongodb::action::FindOneAndUpdate;

use super::{Collections, Shared, backend, existing, is_duplicate_key, queries as q, receiver_exists};

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
        && let Some(message) = existing(shared, sender, cid).await?
    {
        return Ok(Inserted {
            message,
            created: false,
        });
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
    if shared.transactions {
        in_transaction(shared, &send).await
    } else {
        separate_writes(shared, &send).await
    }
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

/// The message that takes sequence number `counter.seq` of its pair.
fn message_at(shared: &Shared, s: &Send, counter: &Document) -> StorageResult<(Message, i64)> {
    let seq = counter
        .get_i64("seq")
        .map_err(|e| StorageError::Backend(format!("pair counter: {e}")))?;
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
    };
    Ok((message, seq))
}

/// The message stored by the same `(sender, clientMsgId)` that made this insert collide.
async fn the_original(shared: &Shared, s: &Send, e: MongoError) -> StorageResult<Inserted> {
    let cid = s.new.client_msg_id.as_deref().unwrap_or_default();
    match existing(shared, s.sender, cid).await? {
        Some(message) => Ok(Inserted {
            message,
            created: false,
        }),
        None => Err(backend(e)),
    }
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
    loop {
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

enum AttemptError {
    Mongo(MongoError),
    Store(StorageError),
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
    let (message, seq) = message_at(shared, s, &counter).map_err(AttemptError::Store)?;
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
    let (message, seq) = message_at(shared, s, &counter)?;
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
