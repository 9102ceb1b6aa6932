//! The production storage backend: MongoDB through the `mongodb` crate's async client
//! (one client per store, one store per process). See `docs/storage-mongodb.md`.
//!
//! Inserts and read-cursor moves go through ordered lanes: a pair always maps to the same
//! lane, and a command enters its lane when `insert` / `mark_read` is *called*, so a
//! pair's writes run one after another in call order. Each lane is one task; `lanes`
//! bounds how many such writes are in flight at once.

mod config;
mod insert;
pub mod migrate;
pub mod queries;
mod state;
mod streams;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use confab_sdk::async_trait;
use confab_sdk::backend::{Admission, KnownIds, Slot, check_config};
use confab_sdk::clock::SharedClock;
use confab_sdk::futures_util::TryStreamExt;
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::ids::new_id;
use confab_sdk::storage::{
    Conversation, Inserted, Message, MessageStore, NewMessage, NewUser, PageQuery, ReadState, StorageError,
    StorageResult, StreamPage, UserRecord, UserStore,
};
use confab_sdk::time::from_millis;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use mongodb::{Client, Collection, Database};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use crate::config::MongoConfig;
use queries as q;

pub(crate) fn backend(e: mongodb::error::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

/// The client options of `cfg`: its URI, write concern and timeout.
pub async fn client_options(cfg: &MongoConfig) -> StorageResult<ClientOptions> {
    let mut options = ClientOptions::parse(&cfg.uri)
        .await
        .map_err(|e| StorageError::Backend(format!("invalid mongodb uri: {e}")))?;
    let w = match cfg.w.as_str() {
        "majority" => Acknowledgment::Majority,
        n => match n.parse::<u32>() {
            Ok(n) => Acknowledgment::Nodes(n),
            Err(_) => Acknowledgment::Custom(n.to_owned()),
        },
    };
    let timeout = Duration::from_millis(cfg.timeout_ms);
    options.write_concern = Some(
        WriteConcern::builder()
            .w(w)
            .journal(cfg.journal)
            .w_timeout(timeout)
            .build(),
    );
    options.server_selection_timeout = Some(timeout);
    options.app_name.get_or_insert_with(|| "confab".to_owned());
    Ok(options)
}

/// The collections of one database.
#[derive(Clone)]
pub(crate) struct Collections {
    pub db: Database,
    pub users: Collection<Document>,
    pub messages: Collection<Document>,
    pub conversations: Collection<Document>,
    pub streams: Collection<Document>,
}

impl Collections {
    pub(crate) fn new(db: Database) -> Self {
        Collections {
            users: db.collection(q::USERS),
            messages: db.collection(q::MESSAGES),
            conversations: db.collection(q::CONVERSATIONS),
            streams: db.collection(q::STREAMS),
            db,
        }
    }

    /// Creates every index (a no-op for those that exist with the same definition).
    pub(crate) async fn ensure_indexes(&self) -> StorageResult<()> {
        for (name, index) in q::indexes() {
            match self.db.collection::<Document>(name).create_index(index).await {
                Ok(_) => {}
                // 85 IndexOptionsConflict: the same keys exist under another name (created by
                // hand or by an older tool); that index serves the same queries.
                Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == 85) => {
                    tracing::warn!(collection = name, error = %e, "an equivalent index exists under another name");
                }
                Err(e) => return Err(StorageError::Backend(format!("creating an index on {name}: {e}"))),
            }
        }
        Ok(())
    }
}

struct MarkRead {
    user: String,
    partner: String,
    up_to: Option<String>,
}

enum Command {
    Insert(NewMessage, oneshot::Sender<StorageResult<Inserted>>),
    MarkRead(MarkRead, oneshot::Sender<StorageResult<ReadState>>),
}

struct Shared {
    cols: Collections,
    clock: SharedClock,
    /// Receivers found once (users are never deleted).
    known: Mutex<KnownIds<ObjectId>>,
    /// A replica set (or mongos): a message's writes commit in one transaction.
    transactions: bool,
    /// How long a write may keep retrying transient transaction errors.
    timeout: Duration,
    /// Sends of this node to or from the same user take that user's stripe first, so
    /// they queue here instead of conflicting on the user's stream counter in MongoDB
    /// (insert.rs). Nodes still conflict with each other, and retry.
    user_stripes: Vec<tokio::sync::Mutex<()>>,
}

/// How many stripes [`Shared::user_stripes`] has.
const USER_STRIPES: usize = 256;

/// Users and messages in one MongoDB database.
pub struct MongoStore {
    shared: Arc<Shared>,
    /// Emptied by `close`: dropping the senders lets each lane drain and end.
    lanes: RwLock<Vec<mpsc::UnboundedSender<(Command, Slot)>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Commands queued or running in all lanes, at most `queue_capacity`.
    admission: Admission,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.shared.cols.db.name())
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// The `createdAt` and `_id` of message `id` if it is to or from `user`, else
    /// `InvalidCursor(name)`: the cursor of `sync` and of the conversation list.
    async fn user_cursor(
        &self,
        user: ObjectId,
        id: Option<&str>,
        name: &str,
    ) -> StorageResult<Option<(DateTime, ObjectId)>> {
        let Some(id) = id else { return Ok(None) };
        let invalid = || StorageError::InvalidCursor(name.into());
        let oid = q::oid(id).ok_or_else(invalid)?;
        let found = self
            .shared
            .cols
            .messages
            .find_one(q::involving(oid, user))
            .projection(doc! {"createdAt": 1})
            .await
            .map_err(backend)?
            .ok_or_else(invalid)?;
        let at = found.get_datetime("createdAt").copied().unwrap_or(oid.timestamp());
        Ok(Some((at, oid)))
    }

    /// Connects (checking that the server answers), creates the indexes, and starts the lanes.
    pub async fn open(cfg: &MongoConfig, clock: SharedClock) -> StorageResult<Arc<MongoStore>> {
        check_config("mongodb", &cfg.problems())?;
        let client = Client::with_options(client_options(cfg).await?).map_err(backend)?;
        let db = client.database(&cfg.database);
        db.run_command(doc! {"ping": 1})
            .await
            .map_err(|e| StorageError::Backend(format!("mongodb at {}: {e}", redact(&cfg.uri))))?;
        let transactions = supports_transactions(&db, cfg).await?;
        let cols = Collections::new(db);
        cols.ensure_indexes().await?;
        streams::backfill_once(&cols).await?;
        let shared = Arc::new(Shared {
            cols,
            clock,
            known: Mutex::new(KnownIds::default()),
            transactions,
            timeout: Duration::from_millis(cfg.timeout_ms),
            user_stripes: (0..USER_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        });
        let mut lanes = Vec::with_capacity(cfg.lanes);
        let mut workers = Vec::with_capacity(cfg.lanes);
        for _ in 0..cfg.lanes {
            let (tx, rx) = mpsc::unbounded_channel();
            lanes.push(tx);
            workers.push(tokio::spawn(lane(shared.clone(), rx)));
        }
        Ok(Arc::new(MongoStore {
            shared,
            lanes: RwLock::new(lanes),
            workers: Mutex::new(workers),
            admission: Admission::new(cfg.queue_capacity),
        }))
    }

    /// Drops the whole database: for tests that created one of their own.
    pub async fn drop_database(&self) -> StorageResult<()> {
        self.shared.cols.db.drop().await.map_err(backend)
    }

    /// Stops accepting writes, lets every lane finish what it holds, and waits for them.
    pub async fn close(&self) {
        {
            // Under the write lock: no enqueue is halfway, so whatever was queued is kept.
            let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
            self.admission.close();
            lanes.clear();
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.await;
        }
    }

    fn check_open(&self) -> StorageResult<()> {
        self.admission.check_open()
    }

    /// Queues a command into the lane of its pair, now.
    fn enqueue<T: Send + 'static>(
        &self,
        a: &str,
        b: &str,
        make: impl FnOnce(oneshot::Sender<StorageResult<T>>) -> Command,
    ) -> BoxFuture<'static, StorageResult<T>> {
        let (tx, rx) = oneshot::channel();
        let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
        let queued = self.admission.admit().and_then(|slot| {
            if lanes.is_empty() {
                return Err(StorageError::Closed);
            }
            let mut h = DefaultHasher::new();
            q::pair_key(a, b).hash(&mut h);
            let lane = &lanes[(h.finish() % lanes.len() as u64) as usize];
            lane.send((make(tx), slot)).map_err(|_| StorageError::Closed)
        });
        drop(lanes);
        Box::pin(async move {
            queued?;
            confab_sdk::backend::reply(rx).await
        })
    }
}

/// Whether the server runs transactions: a replica set member or a mongos does, a
/// standalone server does not and is refused unless `allow_standalone` says otherwise.
async fn supports_transactions(db: &Database, cfg: &MongoConfig) -> StorageResult<bool> {
    let hello = db.run_command(doc! {"hello": 1}).await.map_err(backend)?;
    if hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid") {
        return Ok(true);
    }
    if cfg.allow_standalone {
        tracing::warn!(
            uri = %redact(&cfg.uri),
            "standalone mongodb server (storage.mongodb.allow_standalone): messages are stored without transactions"
        );
        return Ok(false);
    }
    Err(StorageError::Backend(format!(
        "storage.mongodb.uri: {} is a standalone MongoDB server, and Confab stores each message in a \
         transaction, which needs a replica set. A single node is enough: restart mongod with \
         `--replSet rs0` and run `rs.initiate()` once (docs/operators.md). To run without transactions \
         instead, set storage.mongodb.allow_standalone = true (docs/storage-mongodb.md says what that weakens).",
        redact(&cfg.uri)
    )))
}

/// Hides the password of a connection string in messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &uri[..s], &uri[at + 1..]),
        _ => uri.to_owned(),
    }
}

/// One lane: runs its commands one at a time, in the order they were queued, until its
/// sender is dropped (by `close`, or with the store) and its queue is empty.
async fn lane(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(Command, Slot)>) {
    // The slot is given back once its command is done.
    while let Some((cmd, _slot)) = rx.recv().await {
        match cmd {
            Command::Insert(m, reply) => {
                let _ = reply.send(insert::insert(&shared, m).await);
            }
            Command::MarkRead(r, reply) => {
                let _ = reply.send(mark_read(&shared, r).await);
            }
        }
    }
}

async fn receiver_exists(shared: &Shared, id: ObjectId) -> StorageResult<bool> {
    if shared.known.lock().unwrap_or_else(|e| e.into_inner()).contains(&id) {
        return Ok(true);
    }
    let found = shared
        .cols
        .users
        .find_one(doc! {"_id": id})
        .projection(doc! {"_id": 1})
        .await
        .map_err(backend)?
        .is_some();
    if found {
        shared
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(std::iter::once(id));
    }
    Ok(found)
}

async fn existing(shared: &Shared, sender: ObjectId, cid: &str) -> StorageResult<Option<Message>> {
    let found = shared
        .cols
        .messages
        .find_one(q::by_client_msg_id(sender, cid))
        .await
        .map_err(backend)?;
    found.as_ref().map(q::message_from_doc).transpose()
}

async fn mark_read(shared: &Shared, r: MarkRead) -> StorageResult<ReadState> {
    let invalid = || StorageError::InvalidCursor("upTo".into());
    let state = |up_to: Option<String>, read_at, unread| ReadState {
        user_id: r.user.clone(),
        partner_id: r.partner.clone(),
        up_to,
        read_at,
        unread,
    };
    let pair = q::pair_key(&r.user, &r.partner);
    let conv = shared
        .cols
        .conversations
        .find_one(doc! {"_id": &pair})
        .await
        .map_err(backend)?;
    let Some(conv) = conv.filter(|c| c.contains_key("lastSeq")) else {
        if r.up_to.is_some() {
            return Err(invalid());
        }
        return Ok(state(None, None, 0));
    };
    let (target_seq, target_id) = match &r.up_to {
        Some(id) => {
            let oid = q::oid(id).ok_or_else(invalid)?;
            let found = shared
                .cols
                .messages
                .find_one(q::in_pair(oid, &pair))
                .projection(doc! {"seq": 1})
                .await
                .map_err(backend)?
                .ok_or_else(invalid)?;
            (found.get_i64("seq").map_err(|_| invalid())?, oid)
        }
        None => (
            conv.get_i64("lastSeq")
                .map_err(|e| StorageError::Backend(format!("conversation: {e}")))?,
            conv.get_object_id("lastId")
                .map_err(|e| StorageError::Backend(format!("conversation: {e}")))?,
        ),
    };
    let current = q::read_state_of(&conv, &r.user);
    if let Some((seq, id, at)) = &current
        && *seq >= target_seq
    {
        return Ok(state(Some(id.clone()), Some(*at), q::unread_of(&conv, &r.user)));
    }
    let partner = q::oid(&r.partner).ok_or_else(invalid)?;
    let unread = if conv.get_i64("lastSeq").ok() == Some(target_seq) {
        0
    } else {
        shared
            .cols
            .messages
            .count_documents(q::unread_after(&pair, partner, target_seq))
            .await
            .map_err(backend)?
    };
    let now = shared.clock.now_millis();
    let (filter, update) = q::mark_read_update(
        &pair,
        &r.user,
        target_seq,
        target_id,
        DateTime::from_millis(now),
        unread as i64,
    );
    shared
        .cols
        .conversations
        .update_one(filter, update)
        .await
        .map_err(backend)?;
    Ok(state(Some(target_id.to_hex()), Some(from_millis(now)), unread))
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord> {
        self.check_open()?;
        let now = self.shared.clock.now_millis();
        let id = q::oid(&new_id(now.div_euclid(1000))).unwrap_or_default();
        let d = q::new_user_doc(
            id,
            &user.username,
            user.display_name.as_deref(),
            &user.password_hash,
            DateTime::from_millis(now),
        );
        match self.shared.cols.users.insert_one(&d).await {
            Ok(_) => q::user_from_doc(&d),
            Err(e) if is_duplicate_key(&e) => Err(StorageError::Conflict("username is taken".into())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn user_by_id(&self, id: &str) -> StorageResult<Option<UserRecord>> {
        let Some(id) = q::oid(id) else { return Ok(None) };
        let found = self
            .shared
            .cols
            .users
            .find_one(doc! {"_id": id})
            .await
            .map_err(backend)?;
        found.as_ref().map(q::user_from_doc).transpose()
    }

    async fn user_by_username(&self, username: &str) -> StorageResult<Option<UserRecord>> {
        let found = self
            .shared
            .cols
            .users
            .find_one(q::user_by_name_filter(username))
            .await
            .map_err(backend)?;
        found.as_ref().map(q::user_from_doc).transpose()
    }

    /// In the `settings` collection (`{_id: "deployment_secret", value}`): the first insert
    /// wins, a node that loses the race reads the winner's.
    async fn deployment_secret(&self) -> StorageResult<String> {
        let settings = self.shared.cols.db.collection::<Document>(q::SETTINGS);
        let filter = doc! {"_id": q::DEPLOYMENT_SECRET};
        let read = || async {
            let found = settings.find_one(filter.clone()).await.map_err(backend)?;
            Ok::<_, StorageError>(found.and_then(|d| d.get_str("value").ok().map(str::to_owned)))
        };
        if let Some(secret) = read().await? {
            return Ok(secret);
        }
        let bytes: [u8; 32] = rand::random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match settings
            .insert_one(doc! {"_id": q::DEPLOYMENT_SECRET, "value": &secret})
            .await
        {
            Ok(_) => {
                tracing::info!(database = %self.shared.cols.db.name(), "generated the deployment secret");
                Ok(secret)
            }
            Err(e) if is_duplicate_key(&e) => read()
                .await?
                .ok_or_else(|| StorageError::Backend("deployment secret vanished".into())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StorageResult<()> {
        self.check_open()?;
        let not_found = || StorageError::NotFound("user not found".into());
        let id = q::oid(id).ok_or_else(not_found)?;
        let now = DateTime::from_millis(self.shared.clock.now_millis());
        let r = self
            .shared
            .cols
            .users
            .update_one(doc! {"_id": id}, q::set_password_update(hash, now))
            .await
            .map_err(backend)?;
        if r.matched_count == 0 {
            return Err(not_found());
        }
        Ok(())
    }
}

#[async_trait]
impl MessageStore for MongoStore {
    fn insert(&self, message: NewMessage) -> BoxFuture<'static, StorageResult<Inserted>> {
        let (a, b) = (message.sender_id.clone(), message.receiver_id.clone());
        self.enqueue(&a, &b, |reply| Command::Insert(message, reply))
    }

    async fn history(&self, a: &str, b: &str, page: PageQuery) -> StorageResult<Vec<Message>> {
        let pair = q::pair_key(a, b);
        let cols = &self.shared.cols;
        let resolve = |cursor: Option<String>, name: &'static str| {
            let pair = pair.clone();
            async move {
                let Some(c) = cursor else { return Ok(None) };
                let invalid = || StorageError::InvalidCursor(name.into());
                let oid = q::oid(&c).ok_or_else(invalid)?;
                let found = cols
                    .messages
                    .find_one(q::in_pair(oid, &pair))
                    .projection(doc! {"seq": 1})
                    .await
                    .map_err(backend)?
                    .ok_or_else(invalid)?;
                found.get_i64("seq").map(Some).map_err(|_| invalid())
            }
        };
        let before = resolve(page.before, "before").await?;
        let after = resolve(page.after, "after").await?;
        // MongoDB reads a limit of 0 as "no limit".
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let (filter, sort, newest_first) = q::history_query(&pair, before, after);
        let docs: Vec<Document> = cols
            .messages
            .find(filter)
            .sort(sort)
            .limit(i64::try_from(page.limit).unwrap_or(i64::MAX))
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        let mut page: Vec<Message> = docs.iter().map(q::message_from_doc).collect::<StorageResult<_>>()?;
        if newest_first {
            page.reverse();
        }
        Ok(page)
    }

    async fn since(&self, user: &str, after: Option<&str>, limit: usize) -> StorageResult<(Vec<Message>, bool)> {
        let Some(uid) = q::oid(user) else {
            return if after.is_some() {
                Err(StorageError::InvalidCursor("after".into()))
            } else {
                Ok((Vec::new(), false))
            };
        };
        let cursor = self.user_cursor(uid, after, "after").await?;
        let cols = &self.shared.cols;
        let (filter, sort) = q::since_query(uid, cursor);
        let fetch = limit.saturating_add(1);
        let docs: Vec<Document> = cols
            .messages
            .find(filter)
            .sort(sort)
            .limit(i64::try_from(fetch).unwrap_or(i64::MAX))
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        let mut messages: Vec<Message> = docs.iter().map(q::message_from_doc).collect::<StorageResult<_>>()?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        Ok((messages, more))
    }

    async fn stream(&self, user: &str, after_pos: u64, limit: usize) -> StorageResult<StreamPage> {
        streams::page(&self.shared.cols, user, after_pos, limit).await
    }

    async fn conversations(&self, user: &str, before: Option<&str>, limit: usize) -> StorageResult<Vec<Conversation>> {
        let Some(uid) = q::oid(user) else {
            return if before.is_some() {
                Err(StorageError::InvalidCursor("before".into()))
            } else {
                Ok(Vec::new())
            };
        };
        let cursor = self.user_cursor(uid, before, "before").await?;
        if limit == 0 {
            return Ok(Vec::new()); // MongoDB reads a limit of 0 as "no limit".
        }
        let (filter, sort) = q::conversations_query(uid, cursor);
        let docs: Vec<Document> = self
            .shared
            .cols
            .conversations
            .find(filter)
            .sort(sort)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        docs.iter()
            .map(|c| {
                let last = c
                    .get_document("last")
                    .map_err(|e| StorageError::Backend(format!("conversation: {e}")))?;
                let last_message = q::message_from_doc(last)?;
                Ok(Conversation {
                    partner: q::partner_of(c, user).unwrap_or_default(),
                    last_at: last_message.created_at,
                    unread: q::unread_of(c, user),
                    last_message,
                })
            })
            .collect()
    }

    async fn mark_read(&self, user: &str, partner: &str, up_to: Option<&str>) -> StorageResult<ReadState> {
        let r = MarkRead {
            user: user.to_ascii_lowercase(),
            partner: partner.to_ascii_lowercase(),
            up_to: up_to.map(str::to_owned),
        };
        self.enqueue(user, partner, |reply| Command::MarkRead(r, reply)).await
    }

    async fn ping(&self) -> StorageResult<()> {
        self.check_open()?;
        self.shared
            .cols
            .db
            .run_command(doc! {"ping": 1})
            .await
            .map(drop)
            .map_err(backend)
    }

    async fn close(&self) {
        MongoStore::close(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("mongodb://u:secret@h:27017/db"), "mongodb://***@h:27017/db");
        assert_eq!(redact("mongodb://h:27017"), "mongodb://h:27017");
    }

    #[tokio::test]
    async fn client_options_carry_the_write_concern() {
        let cfg = MongoConfig {
            w: "2".into(),
            journal: true,
            timeout_ms: 1234,
            ..MongoConfig::default()
        };
        let o = client_options(&cfg).await.expect("options");
        let wc = o.write_concern.expect("write concern");
        assert_eq!(wc.w, Some(Acknowledgment::Nodes(2)));
        assert_eq!(wc.journal, Some(true));
        assert_eq!(wc.w_timeout, Some(Duration::from_millis(1234)));
        let o = client_options(&MongoConfig::default()).await.expect("options");
        assert_eq!(o.write_concern.and_then(|w| w.w), Some(Acknowledgment::Majority));
    }
}
