//! Every filter, sort, update and index the MongoDB backend sends, as pure functions of
//! their inputs (unit-tested without a server), and the mapping of stored documents.

use confab_sdk::ids::is_id;
use confab_sdk::storage::{Message, StorageError, StorageResult, UserRecord};
use confab_sdk::time::{Timestamp, from_millis};
use mongodb::IndexModel;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;

/// The collections. `users` and `chatmessages` are the old backend's (Mongoose's
/// defaults), so Confab can be pointed at its database; see `migrate.rs`.
pub const USERS: &str = "users";
pub const MESSAGES: &str = "chatmessages";
pub const CONVERSATIONS: &str = "conversations";
/// Deployment-wide values (the deployment secret); keep access to it as tight as the users'.
pub const SETTINGS: &str = "settings";
pub const DEPLOYMENT_SECRET: &str = "deployment_secret";
/// Each user's stream head: `{_id: userId (ObjectId), head}` (streams.rs).
pub const STREAMS: &str = "streams";
/// The `settings` entry that says every message has its stream positions.
pub const STREAMS_BACKFILLED: &str = "streams_backfilled";
/// The in-process cluster backend's records (sessions, revocations, refresh families):
/// `{_id: "<kind>/<key>", kind, value, expires}`.
pub const CLUSTER_STATE: &str = "cluster_state";

/// An id given by a caller, as an ObjectId; `None` when it cannot name any document.
pub fn oid(id: &str) -> Option<ObjectId> {
    if is_id(id) { ObjectId::parse_str(id).ok() } else { None }
}

/// The key of the conversation of two users: both ids, smaller first, so both
/// directions share one conversation document and one range of the pair index.
pub fn pair_key(a: &str, b: &str) -> String {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a <= b { format!("{a}:{b}") } else { format!("{b}:{a}") }
}

/// Per-user fields of a conversation document are keyed by the user's id.
fn unread_field(user: &str) -> String {
    format!("unread.{}", user.to_ascii_lowercase())
}

fn read_field(user: &str) -> String {
    format!("read.{}", user.to_ascii_lowercase())
}

fn dt(t: &Timestamp) -> DateTime {
    DateTime::from_millis(t.timestamp_millis())
}

/// `(collection, index)` for every index, created at boot (idempotently: the same name
/// and keys are a no-op). `docs/storage-mongodb.md` lists the query each one serves.
pub fn indexes() -> Vec<(&'static str, IndexModel)> {
    let named = |name: &str| IndexOptions::builder().name(name.to_owned());
    vec![
        (
            USERS,
            IndexModel::builder()
                .keys(doc! {"usernameLower": 1})
                // Partial: the old backend's users have no usernameLower until migrated.
                .options(
                    named("usernameLower_unique")
                        .unique(true)
                        .partial_filter_expression(doc! {"usernameLower": {"$exists": true}})
                        .build(),
                )
                .build(),
        ),
        (
            MESSAGES,
            IndexModel::builder()
                .keys(doc! {"pair": 1, "seq": 1})
                .options(named("pair_seq").build())
                .build(),
        ),
        (
            MESSAGES,
            IndexModel::builder()
                .keys(doc! {"senderId": 1, "clientMsgId": 1})
                .options(
                    named("sender_clientMsgId_unique")
                        .unique(true)
                        .partial_filter_expression(doc! {"clientMsgId": {"$exists": true}})
                        .build(),
                )
                .build(),
        ),
        (
            MESSAGES,
            IndexModel::builder()
                .keys(doc! {"senderId": 1, "createdAt": 1, "_id": 1})
                .options(named("sender_time").build())
                .build(),
        ),
        (
            MESSAGES,
            IndexModel::builder()
                .keys(doc! {"receiverId": 1, "createdAt": 1, "_id": 1})
                .options(named("receiver_time").build())
                .build(),
        ),
        (
            CONVERSATIONS,
            IndexModel::builder()
                .keys(doc! {"users": 1, "lastAt": -1, "lastId": -1})
                .options(named("users_last").build())
                .build(),
        ),
        (
            MESSAGES,
            IndexModel::builder()
                .keys(doc! {"senderId": 1, "senderPos": 1})
                .options(named("sender_pos").build())
                .build(),
        ),
        (
            MESSAGES,
            IndexModel::builder()
                .keys(doc! {"receiverId": 1, "receiverPos": 1})
                .options(named("receiver_pos").build())
                .build(),
        ),
        (
            CLUSTER_STATE,
            IndexModel::builder()
                .keys(doc! {"kind": 1, "expires": 1})
                .options(named("kind_expires").build())
                .build(),
        ),
        (
            CLUSTER_STATE,
            // MongoDB removes expired records on its own (within a minute or so); reads
            // filter by `expires` anyway.
            IndexModel::builder()
                .keys(doc! {"expires": 1})
                .options(named("expires_ttl").expire_after(std::time::Duration::ZERO).build())
                .build(),
        ),
    ]
}

// ---- users ----

pub fn new_user_doc(id: ObjectId, username: &str, display_name: Option<&str>, hash: &str, now: DateTime) -> Document {
    doc! {
        "_id": id,
        "username": username,
        "usernameLower": username.to_lowercase(),
        "displayName": display_name,
        "passwordHash": hash,
        "createdAt": now,
        "updatedAt": now,
    }
}

pub fn user_by_name_filter(username: &str) -> Document {
    doc! {"usernameLower": username.to_lowercase()}
}

pub fn set_password_update(hash: &str, now: DateTime) -> Document {
    doc! {"$set": {"passwordHash": hash, "updatedAt": now}}
}

/// A user document as stored by Confab or by the old backend (no `usernameLower`, maybe
/// no timestamps: the ObjectId's time stands in).
pub fn user_from_doc(d: &Document) -> StorageResult<UserRecord> {
    let id = d.get_object_id("_id").map_err(bad("users._id"))?;
    let created = time_or(d, "createdAt", id.timestamp());
    Ok(UserRecord {
        id: id.to_hex(),
        username: d.get_str("username").map_err(bad("users.username"))?.to_owned(),
        display_name: d.get_str("displayName").ok().map(str::to_owned),
        password_hash: d.get_str("passwordHash").map_err(bad("users.passwordHash"))?.to_owned(),
        created_at: created,
        updated_at: time_or(d, "updatedAt", dt_of(created)),
    })
}

/// Takes the next position of a user's stream: the filter and update of a
/// `find_one_and_update` (upsert, returning the new head).
pub fn next_pos(user: ObjectId) -> (Document, Document) {
    (doc! {"_id": user}, doc! {"$inc": {"head": 1_i64}})
}

fn dt_of(t: Timestamp) -> DateTime {
    dt(&t)
}

fn time_or(d: &Document, key: &str, fallback: DateTime) -> Timestamp {
    from_millis(d.get_datetime(key).copied().unwrap_or(fallback).timestamp_millis())
}

fn bad(what: &'static str) -> impl Fn(mongodb::bson::document::ValueAccessError) -> StorageError {
    move |e| StorageError::Backend(format!("unexpected document: {what}: {e}"))
}

/// A user reference as the old backend may have stored it (ObjectId or hex string).
pub fn user_ref(v: Option<&Bson>) -> Option<ObjectId> {
    match v? {
        Bson::ObjectId(o) => Some(*o),
        Bson::String(s) => oid(s),
        _ => None,
    }
}

// ---- messages ----

pub fn message_doc(m: &Message, pair: &str, seq: i64) -> Document {
    let mut d = message_body(m);
    d.insert("pair", pair);
    d.insert("seq", seq);
    d
}

/// The message as the API shows it; also the `last` field of a conversation.
pub fn message_body(m: &Message) -> Document {
    let mut d = doc! {
        "_id": oid(&m.id).unwrap_or_default(),
        "senderId": oid(&m.sender_id).unwrap_or_default(),
        "receiverId": oid(&m.receiver_id).unwrap_or_default(),
        "message": m.message.as_str(),
        "createdAt": dt(&m.created_at),
        "updatedAt": dt(&m.updated_at),
    };
    if let Some(cid) = &m.client_msg_id {
        d.insert("clientMsgId", cid.as_str());
    }
    if let Some((sender, receiver)) = m.positions {
        d.insert("senderPos", sender as i64);
        d.insert("receiverPos", receiver as i64);
    }
    d
}

/// A position field, however a driver or the shell wrote the number.
fn position(d: &Document, key: &str) -> Option<u64> {
    match d.get(key)? {
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if *n >= 1.0 => Some(*n as u64),
        _ => None,
    }
}

pub fn message_from_doc(d: &Document) -> StorageResult<Message> {
    let id = d.get_object_id("_id").map_err(bad("message._id"))?;
    let created = time_or(d, "createdAt", id.timestamp());
    let party = |key: &'static str| {
        user_ref(d.get(key))
            .map(|o| o.to_hex())
            .ok_or_else(|| StorageError::Backend(format!("unexpected document: message.{key}")))
    };
    Ok(Message {
        id: id.to_hex(),
        sender_id: party("senderId")?,
        receiver_id: party("receiverId")?,
        message: d.get_str("message").map_err(bad("message.message"))?.to_owned(),
        client_msg_id: d.get_str("clientMsgId").ok().map(str::to_owned),
        created_at: created,
        updated_at: time_or(d, "updatedAt", dt_of(created)),
        pos: None,
        positions: position(d, "senderPos").zip(position(d, "receiverPos")),
    })
}

pub fn by_client_msg_id(sender: ObjectId, client_msg_id: &str) -> Document {
    doc! {"senderId": sender, "clientMsgId": client_msg_id}
}

/// A message of this pair (cursor resolution for `history` and `mark_read`).
pub fn in_pair(id: ObjectId, pair: &str) -> Document {
    doc! {"_id": id, "pair": pair}
}

/// A message sent or received by `user` (cursor resolution for `since`).
pub fn involving(id: ObjectId, user: ObjectId) -> Document {
    doc! {"_id": id, "$or": [{"senderId": user}, {"receiverId": user}]}
}

/// `history`: filter, sort, and whether the result comes newest first (to be reversed).
/// Forward from `after` when given; else backward from `before` or the newest end.
pub fn history_query(pair: &str, before: Option<i64>, after: Option<i64>) -> (Document, Document, bool) {
    let mut seq = Document::new();
    if let Some(a) = after {
        seq.insert("$gt", a);
    }
    if let Some(b) = before {
        seq.insert("$lt", b);
    }
    let mut filter = doc! {"pair": pair};
    if !seq.is_empty() {
        filter.insert("seq", seq);
    }
    let newest_first = after.is_none();
    let dir = if newest_first { -1 } else { 1 };
    (filter, doc! {"seq": dir}, newest_first)
}

/// `since`: messages to or from `user` after `(at, id)` in `(createdAt, _id)` order. One
/// `$or` branch per index (sender_time, receiver_time), merged in sort order.
pub fn since_query(user: ObjectId, after: Option<(DateTime, ObjectId)>) -> (Document, Document) {
    let branch = |field: &str| {
        let mut d = doc! {field: user};
        if let Some((at, id)) = after {
            d.insert(
                "$or",
                vec![
                    Bson::Document(doc! {"createdAt": {"$gt": at}}),
                    Bson::Document(doc! {"createdAt": at, "_id": {"$gt": id}}),
                ],
            );
        }
        Bson::Document(d)
    };
    (
        doc! {"$or": [branch("senderId"), branch("receiverId")]},
        doc! {"createdAt": 1, "_id": 1},
    )
}

// ---- conversations ----

/// Takes the pair's next sequence number (creating its document on the first message).
/// The pair's newest time comes back too: a message is never dated before its predecessor.
pub fn next_seq(pair: &str, a: ObjectId, b: ObjectId) -> (Document, Document, Document) {
    let users = if a <= b { [a, b] } else { [b, a] };
    (
        doc! {"_id": pair},
        doc! {"$inc": {"seq": 1_i64}, "$setOnInsert": {"users": users.to_vec()}},
        doc! {"seq": 1, "lastAt": 1},
    )
}

/// After a message is stored: it becomes the pair's last message unless a later one (of
/// another node) is already there, and the receiver gains one unread message.
pub fn conversation_last(pair: &str, m: &Message, seq: i64) -> (Document, Document) {
    (
        doc! {"_id": pair, "$or": [{"lastSeq": {"$lt": seq}}, {"lastSeq": {"$exists": false}}]},
        doc! {
            "$set": {"lastSeq": seq, "lastId": oid(&m.id).unwrap_or_default(), "lastAt": dt(&m.created_at),
                     "last": message_body(m)},
            "$inc": {unread_field(&m.receiver_id): 1_i64},
        },
    )
}

/// [`conversation_last`] without the unread `$inc`: safe to repeat, for when the first
/// attempt failed and may or may not have been applied.
pub fn conversation_last_only(pair: &str, m: &Message, seq: i64) -> (Document, Document) {
    let (filter, mut update) = conversation_last(pair, m, seq);
    update.remove("$inc");
    (filter, update)
}

/// The fallback of [`conversation_last`] when a later message is already the last one.
pub fn conversation_unread_only(pair: &str, receiver: &str) -> (Document, Document) {
    (doc! {"_id": pair}, doc! {"$inc": {unread_field(receiver): 1_i64}})
}

/// A user's conversations that hold a message, newest first (index `users_last`); with a
/// cursor (the `createdAt` and `_id` of a message), only those whose last message is older.
pub fn conversations_query(user: ObjectId, before: Option<(DateTime, ObjectId)>) -> (Document, Document) {
    let mut filter = doc! {"users": user, "lastSeq": {"$exists": true}};
    if let Some((at, id)) = before {
        filter.insert(
            "$or",
            vec![doc! {"lastAt": {"$lt": at}}, doc! {"lastAt": at, "lastId": {"$lt": id}}],
        );
    }
    (filter, doc! {"lastAt": -1, "lastId": -1})
}

/// Counts the partner's messages after `seq` (the unread recount of `mark_read`).
pub fn unread_after(pair: &str, partner: ObjectId, seq: i64) -> Document {
    doc! {"pair": pair, "senderId": partner, "seq": {"$gt": seq}}
}

/// Moves `user`'s read cursor to `seq` only if it is further than the stored one.
pub fn mark_read_update(
    pair: &str,
    user: &str,
    seq: i64,
    id: ObjectId,
    at: DateTime,
    unread: i64,
) -> (Document, Document) {
    let seq_field = format!("{}.seq", read_field(user));
    (
        doc! {"_id": pair, "$or": [{&seq_field: {"$lt": seq}}, {&seq_field: {"$exists": false}}]},
        doc! {"$set": {read_field(user): {"seq": seq, "id": id, "at": at}, unread_field(user): unread}},
    )
}

/// `user`'s read cursor in a conversation document: `(seq, id, at)`.
pub fn read_state_of(conv: &Document, user: &str) -> Option<(i64, String, Timestamp)> {
    let r = conv
        .get_document("read")
        .ok()?
        .get_document(user.to_ascii_lowercase())
        .ok()?;
    Some((
        r.get_i64("seq").ok()?,
        r.get_object_id("id").ok()?.to_hex(),
        from_millis(r.get_datetime("at").ok()?.timestamp_millis()),
    ))
}

pub fn unread_of(conv: &Document, user: &str) -> u64 {
    let n = conv
        .get_document("unread")
        .ok()
        .and_then(|u| match u.get(user.to_ascii_lowercase()) {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            _ => None,
        })
        .unwrap_or(0);
    n.max(0) as u64
}

/// The other participant of a conversation document (the user itself for a
/// conversation with oneself).
pub fn partner_of(conv: &Document, user: &str) -> Option<String> {
    let users = conv.get_array("users").ok()?;
    let ids: Vec<String> = users
        .iter()
        .filter_map(|u| u.as_object_id())
        .map(|o| o.to_hex())
        .collect();
    let me = user.to_ascii_lowercase();
    ids.iter().find(|u| **u != me).or_else(|| ids.first()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const A: &str = "65f000000000000000000001";
    const B: &str = "65f000000000000000000002";

    #[test]
    fn pair_key_is_symmetric_and_lowercase() {
        assert_eq!(pair_key(A, B), format!("{A}:{B}"));
        assert_eq!(pair_key(B, &A.to_uppercase()), format!("{A}:{B}"));
        assert_eq!(oid("not-an-id"), None);
        assert!(oid(A).is_some());
    }

    #[test]
    fn history_queries_walk_the_pair_index() {
        let p = pair_key(A, B);
        assert_eq!(
            history_query(&p, None, None),
            (doc! {"pair": &p}, doc! {"seq": -1}, true),
            "newest page: backward from the end"
        );
        assert_eq!(
            history_query(&p, Some(40), None),
            (doc! {"pair": &p, "seq": {"$lt": 40_i64}}, doc! {"seq": -1}, true)
        );
        assert_eq!(
            history_query(&p, Some(40), Some(10)),
            (
                doc! {"pair": &p, "seq": {"$gt": 10_i64, "$lt": 40_i64}},
                doc! {"seq": 1},
                false
            ),
            "after: forward, bounded by before"
        );
    }

    #[test]
    fn since_query_has_one_branch_per_index() {
        let (u, m) = (oid(A).unwrap(), oid(B).unwrap());
        let at = DateTime::from_millis(1_700_000_000_123);
        let (filter, sort) = since_query(u, Some((at, m)));
        let after = doc! {"$or": [{"createdAt": {"$gt": at}}, {"createdAt": at, "_id": {"$gt": m}}]};
        let mut sent = doc! {"senderId": u};
        sent.extend(after.clone());
        let mut received = doc! {"receiverId": u};
        received.extend(after);
        assert_eq!(filter, doc! {"$or": [sent, received]});
        assert_eq!(sort, doc! {"createdAt": 1, "_id": 1});
        let (all, _) = since_query(u, None);
        assert_eq!(all, doc! {"$or": [{"senderId": u}, {"receiverId": u}]});
    }

    fn sample() -> Message {
        Message {
            id: "65f0000000000000000000aa".into(),
            sender_id: A.into(),
            receiver_id: B.into(),
            message: "hi".into(),
            client_msg_id: Some("c1".into()),
            created_at: chrono::Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            updated_at: chrono::Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            pos: None,
            positions: Some((7, 3)),
        }
    }

    #[test]
    fn messages_round_trip_through_documents() {
        let m = sample();
        let d = message_doc(&m, &pair_key(A, B), 7);
        assert_eq!(d.get_i64("seq").unwrap(), 7);
        assert_eq!(d.get_object_id("senderId").unwrap().to_hex(), A);
        assert_eq!(message_from_doc(&d).unwrap(), m);
        let mut plain = m.clone();
        plain.client_msg_id = None;
        assert!(
            !message_body(&plain).contains_key("clientMsgId"),
            "absent, not null: the partial index"
        );
    }

    #[test]
    fn conversation_updates_are_conditional_and_per_user() {
        let m = sample();
        let p = pair_key(A, B);
        let (filter, update) = conversation_last(&p, &m, 7);
        assert_eq!(
            filter,
            doc! {"_id": &p, "$or": [{"lastSeq": {"$lt": 7_i64}}, {"lastSeq": {"$exists": false}}]}
        );
        assert_eq!(
            update.get_document("$inc").unwrap(),
            &doc! {format!("unread.{B}"): 1_i64}
        );
        assert_eq!(update.get_document("$set").unwrap().get_i64("lastSeq").unwrap(), 7);
        let (again_filter, again) = conversation_last_only(&p, &m, 7);
        assert_eq!(again_filter, filter, "the repeat is as conditional");
        assert!(!again.contains_key("$inc"), "and counts nothing twice: {again}");
        assert_eq!(
            again.get_document("$set").unwrap(),
            update.get_document("$set").unwrap()
        );
        let (f, u) = mark_read_update(&p, A, 5, oid(&m.id).unwrap(), DateTime::from_millis(9), 2);
        let seq = format!("read.{A}.seq");
        assert_eq!(
            f,
            doc! {"_id": &p, "$or": [{&seq: {"$lt": 5_i64}}, {&seq: {"$exists": false}}]}
        );
        let set = u.get_document("$set").unwrap();
        assert_eq!(set.get_i64(format!("unread.{A}")).unwrap(), 2);
        let conv = doc! {"read": {A: set.get_document(format!("read.{A}")).unwrap().clone()},
        "unread": {A: 2_i64}, "users": [oid(A).unwrap(), oid(B).unwrap()]};
        assert_eq!(read_state_of(&conv, A).map(|r| r.0), Some(5));
        assert_eq!((unread_of(&conv, A), unread_of(&conv, B)), (2, 0));
        assert_eq!(partner_of(&conv, A).as_deref(), Some(B));
        assert_eq!(
            conversations_query(oid(A).unwrap(), None),
            (
                doc! {"users": oid(A).unwrap(), "lastSeq": {"$exists": true}},
                doc! {"lastAt": -1, "lastId": -1}
            )
        );
        let at = DateTime::from_millis(5);
        assert_eq!(
            conversations_query(oid(A).unwrap(), Some((at, oid(B).unwrap()))).0,
            doc! {"users": oid(A).unwrap(), "lastSeq": {"$exists": true},
            "$or": [{"lastAt": {"$lt": at}}, {"lastAt": at, "lastId": {"$lt": oid(B).unwrap()}}]}
        );
        let (_, inc, proj) = next_seq(&p, oid(B).unwrap(), oid(A).unwrap());
        assert_eq!(
            inc,
            doc! {"$inc": {"seq": 1_i64}, "$setOnInsert": {"users": [oid(A).unwrap(), oid(B).unwrap()]}}
        );
        assert_eq!(proj, doc! {"seq": 1, "lastAt": 1});
    }

    #[test]
    fn lookups_match_their_indexes() {
        let (a, m) = (oid(A).unwrap(), oid(B).unwrap());
        let p = pair_key(A, B);
        assert_eq!(by_client_msg_id(a, "c1"), doc! {"senderId": a, "clientMsgId": "c1"});
        assert_eq!(in_pair(m, &p), doc! {"_id": m, "pair": &p});
        assert_eq!(
            involving(m, a),
            doc! {"_id": m, "$or": [{"senderId": a}, {"receiverId": a}]}
        );
        assert_eq!(
            unread_after(&p, a, 9),
            doc! {"pair": &p, "senderId": a, "seq": {"$gt": 9_i64}},
            "a range of pair_seq, filtered by sender"
        );
        assert_eq!(
            conversation_unread_only(&p, &B.to_uppercase()),
            (doc! {"_id": &p}, doc! {"$inc": {format!("unread.{B}"): 1_i64}})
        );
        assert_eq!(
            set_password_update("h", DateTime::from_millis(5)),
            doc! {"$set": {"passwordHash": "h", "updatedAt": DateTime::from_millis(5)}}
        );
    }

    #[test]
    fn indexes_are_named_and_keyed() {
        let list: Vec<(String, String, Document)> = indexes()
            .into_iter()
            .map(|(c, i)| {
                let name = i.options.as_ref().and_then(|o| o.name.clone()).unwrap();
                (c.to_owned(), name, i.keys)
            })
            .collect();
        let names: Vec<&str> = list.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "usernameLower_unique",
                "pair_seq",
                "sender_clientMsgId_unique",
                "sender_time",
                "receiver_time",
                "users_last",
                "sender_pos",
                "receiver_pos",
                "kind_expires",
                "expires_ttl"
            ]
        );
        let ttl = indexes().remove(9).1.options.unwrap();
        assert_eq!(
            ttl.expire_after,
            Some(std::time::Duration::ZERO),
            "records go at their expiry"
        );
        assert_eq!(list[1].2, doc! {"pair": 1, "seq": 1});
        let cid = indexes().remove(2).1.options.unwrap();
        assert_eq!(cid.unique, Some(true));
        assert_eq!(
            cid.partial_filter_expression,
            Some(doc! {"clientMsgId": {"$exists": true}}),
            "messages without a clientMsgId never collide"
        );
    }

    #[test]
    fn users_map_from_old_and_new_documents() {
        let id = oid(A).unwrap();
        let now = DateTime::from_millis(1_700_000_000_000);
        let d = new_user_doc(id, "Alice", None, "h", now);
        assert_eq!(d.get_str("usernameLower").unwrap(), "alice");
        let u = user_from_doc(&d).unwrap();
        assert_eq!((u.id.as_str(), u.display_name), (A, None));
        assert_eq!(user_by_name_filter("ALICE"), doc! {"usernameLower": "alice"});
        let old = doc! {"_id": id, "username": "bob", "passwordHash": "$2b$x", "__v": 0};
        let u = user_from_doc(&old).unwrap();
        assert_eq!(u.created_at.timestamp_millis(), id.timestamp().timestamp_millis());
    }
}
