//! `confab migrate`: brings the old Express backend's database into Confab's shape, in
//! place. Idempotent: it only touches documents it has not migrated yet, so it can be run
//! again (after an interruption, or while new data arrives).
//!
//! - `users`: adds `usernameLower` (the case-insensitive key). `passwordHash` (bcrypt)
//!   is read as is; the auth plugin re-hashes it to argon2id at the next login.
//! - `chatmessages`: adds `pair` and the pair's `seq` (in `createdAt`, `_id` order),
//!   turns string user ids into ObjectIds, and makes each message its conversation's last
//!   one if it is the newest. Migrated messages are not counted as unread.
//! - then every message without stream positions gets them, in the same order
//!   (`streams::backfill`).

use confab_sdk::futures_util::TryStreamExt;
use confab_sdk::storage::{Message, StorageResult};
use mongodb::Client;
use mongodb::bson::{Document, doc};

use crate::config::MongoConfig;
use crate::queries as q;
use crate::{Collections, backend, client_options, is_duplicate_key};

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Users given their case-insensitive key (`usernameLower`).
    pub users: u64,
    /// Usernames that equal another user's but for case: not migrated (they cannot log in
    /// until renamed in the database).
    pub username_conflicts: Vec<String>,
    /// Messages given their pair, sequence number and ObjectId user ids.
    pub messages: u64,
    /// Messages whose sender, receiver or text could not be read; left untouched.
    pub skipped: Vec<String>,
    /// Messages given their stream positions.
    pub positioned: u64,
}

impl Report {
    /// What `confab migrate` prints, one line each.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!("users migrated: {}", self.users),
            format!("messages migrated: {}", self.messages),
        ];
        out.extend(
            self.username_conflicts
                .iter()
                .map(|n| format!("not migrated, username taken in another case: {n}")),
        );
        out.extend(
            self.skipped
                .iter()
                .map(|m| format!("message skipped (unreadable): {m}")),
        );
        out
    }
}

/// The update that migrates one old user document, or `None` if there is nothing to do.
pub fn user_update(d: &Document) -> Option<Document> {
    if d.contains_key("usernameLower") {
        return None;
    }
    let name = d.get_str("username").ok()?;
    Some(doc! {"$set": {"usernameLower": name.to_lowercase()}})
}

/// An old message as Confab reads it (string ids become ObjectId hex, a missing
/// `updatedAt` is `createdAt`).
pub fn legacy_message(d: &Document) -> StorageResult<Message> {
    q::message_from_doc(d)
}

/// The `$set` that gives a migrated message its place in its pair.
pub fn message_update(m: &Message, pair: &str, seq: i64) -> Document {
    let mut set = q::message_doc(m, pair, seq);
    set.remove("_id");
    doc! {"$set": set}
}

/// [`q::conversation_last`] without counting the message as unread.
pub fn conversation_last(pair: &str, m: &Message, seq: i64) -> (Document, Document) {
    let (filter, mut update) = q::conversation_last(pair, m, seq);
    update.remove("$inc");
    (filter, update)
}

/// Connects with `cfg`, creates the indexes and migrates what is left to migrate.
pub async fn run(cfg: &MongoConfig) -> StorageResult<Report> {
    let client = Client::with_options(client_options(cfg).await?).map_err(backend)?;
    let cols = Collections::new(client.database(&cfg.database));
    cols.ensure_indexes().await?;
    let mut report = Report::default();

    let mut users = cols
        .users
        .find(doc! {"usernameLower": {"$exists": false}})
        .await
        .map_err(backend)?;
    while let Some(u) = users.try_next().await.map_err(backend)? {
        let Some(update) = user_update(&u) else { continue };
        let Ok(id) = u.get_object_id("_id") else { continue };
        match cols
            .users
            .update_one(doc! {"_id": id, "usernameLower": {"$exists": false}}, update)
            .await
        {
            Ok(_) => report.users += 1,
            Err(e) if is_duplicate_key(&e) => report
                .username_conflicts
                .push(u.get_str("username").unwrap_or_default().to_owned()),
            Err(e) => return Err(backend(e)),
        }
    }

    let mut messages = cols
        .messages
        .find(doc! {"pair": {"$exists": false}})
        .sort(doc! {"createdAt": 1, "_id": 1})
        .allow_disk_use(true)
        .await
        .map_err(backend)?;
    while let Some(d) = messages.try_next().await.map_err(backend)? {
        let m = match legacy_message(&d) {
            Ok(m) => m,
            Err(e) => {
                report.skipped.push(format!("{:?}: {e}", d.get("_id")));
                continue;
            }
        };
        let (Some(sender), Some(receiver)) = (q::oid(&m.sender_id), q::oid(&m.receiver_id)) else {
            continue;
        };
        let pair = q::pair_key(&m.sender_id, &m.receiver_id);
        let counter = crate::insert::take_seq(&cols, &pair, sender, receiver)
            .await
            .map_err(backend)?;
        let seq = crate::insert::seq_of(counter.as_ref())?;
        // The conversation first: if the run stops before the message is marked, the next
        // run gives it a later seq and the conversation follows.
        let (filter, update) = conversation_last(&pair, &m, seq);
        cols.conversations.update_one(filter, update).await.map_err(backend)?;
        let id = q::oid(&m.id).unwrap_or_default();
        cols.messages
            .update_one(doc! {"_id": id}, message_update(&m, &pair, seq))
            .await
            .map_err(backend)?;
        report.messages += 1;
    }
    report.positioned = crate::streams::backfill(&cols).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::DateTime;
    use mongodb::bson::oid::ObjectId;

    const ALICE: &str = "65f000000000000000000001";
    const BOB: &str = "65f000000000000000000002";

    #[test]
    fn old_users_keep_their_bcrypt_hash_and_gain_a_lowercase_name() {
        let hash = bcrypt::hash("correct horse", 4).expect("bcrypt");
        assert!(hash.starts_with("$2b$"), "{hash}");
        let id = ObjectId::parse_str(ALICE).unwrap();
        let old = doc! {
            "_id": id, "username": "Alice", "passwordHash": &hash, "displayName": "Alice A.",
            "createdAt": DateTime::from_millis(1_600_000_000_000),
            "updatedAt": DateTime::from_millis(1_600_000_001_000), "__v": 0,
        };
        assert_eq!(user_update(&old), Some(doc! {"$set": {"usernameLower": "alice"}}));
        let user = q::user_from_doc(&old).expect("maps");
        assert_eq!((user.id.as_str(), user.username.as_str()), (ALICE, "Alice"));
        assert_eq!(user.display_name.as_deref(), Some("Alice A."));
        assert_eq!(user.password_hash, hash, "passwordHash maps to password_hash unchanged");
        assert!(bcrypt::verify("correct horse", &user.password_hash).expect("verify"));
        assert!(!bcrypt::verify("wrong", &user.password_hash).expect("verify"));
        assert_eq!(user.created_at.timestamp_millis(), 1_600_000_000_000);
        assert_eq!(user.updated_at.timestamp_millis(), 1_600_000_001_000);
        let mut done = old.clone();
        done.insert("usernameLower", "alice");
        assert_eq!(user_update(&done), None, "a migrated user is left alone");
    }

    #[test]
    fn old_2a_and_2y_prefixes_verify_too() {
        // bcryptjs (Node) writes $2a$ or $2b$, PHP $2y$: the same algorithm.
        let hash = bcrypt::hash("password123", 4).expect("bcrypt");
        for prefix in ["$2a$", "$2y$"] {
            let old_hash = format!("{prefix}{}", &hash[4..]);
            let old = doc! {"_id": ObjectId::new(), "username": "carol", "passwordHash": &old_hash};
            let user = q::user_from_doc(&old).expect("maps");
            assert!(
                bcrypt::verify("password123", &user.password_hash).expect("verify"),
                "{old_hash}"
            );
        }
    }

    #[test]
    fn old_messages_map_with_string_or_objectid_users() {
        let (alice, bob) = (ObjectId::parse_str(ALICE).unwrap(), ObjectId::parse_str(BOB).unwrap());
        let id = ObjectId::new();
        let at = DateTime::from_millis(1_600_000_000_500);
        for (sender, receiver) in [
            (mongodb::bson::Bson::ObjectId(bob), mongodb::bson::Bson::ObjectId(alice)),
            (BOB.into(), ALICE.into()),
        ] {
            let old = doc! {"_id": id, "senderId": sender, "receiverId": receiver, "message": "hi",
            "createdAt": at, "__v": 0};
            let m = legacy_message(&old).expect("maps");
            assert_eq!((m.sender_id.as_str(), m.receiver_id.as_str()), (BOB, ALICE));
            assert_eq!((m.created_at, m.updated_at), (m.created_at, m.created_at));
            assert_eq!(m.client_msg_id, None);
            let pair = q::pair_key(&m.sender_id, &m.receiver_id);
            assert_eq!(pair, format!("{ALICE}:{BOB}"));
            let update = message_update(&m, &pair, 3);
            let set = update.get_document("$set").unwrap();
            assert_eq!(
                set.get_object_id("senderId").unwrap(),
                bob,
                "string ids become ObjectIds"
            );
            assert_eq!(
                (set.get_str("pair").unwrap(), set.get_i64("seq").unwrap()),
                (pair.as_str(), 3)
            );
            assert!(!set.contains_key("_id") && !set.contains_key("clientMsgId"));
            let (_, conv) = conversation_last(&pair, &m, 3);
            assert!(!conv.contains_key("$inc"), "migrated messages are not unread");
        }
        let broken = doc! {"_id": id, "senderId": 5, "receiverId": ALICE, "message": "x"};
        assert!(legacy_message(&broken).is_err());
    }
}
