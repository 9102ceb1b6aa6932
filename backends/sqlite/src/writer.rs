//! The single writer thread: group commit of every write command.
//!
//! Callers enqueue commands into a bounded channel at call time; the writer takes up to
//! `max_batch` of them, runs them in one `BEGIN IMMEDIATE` transaction, commits once, and
//! only then answers every caller. One commit (and, with `synchronous = full`, one fsync)
//! thus covers a whole batch. One command's failure never costs the others their write
//! (see `Writer::guarded`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use confab_sdk::backend::{KnownIds, repeat_of};
use confab_sdk::clock::SharedClock;
use confab_sdk::ids::new_id;
use confab_sdk::storage::{Inserted, NewMessage, NewUser, ReadState, StorageError, StorageResult, UserRecord};
use confab_sdk::time::from_millis;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{WalSignals, checkpoint};
use crate::linger::Linger;
use crate::rows::{self, MESSAGE_COLUMNS, backend, is_busy, pair, side};
use crate::state::{self, PURGE_INTERVAL_MS, StateWrite};
use crate::streams;
use confab_sdk::storage::CommitObserver;

/// Whole-batch retries after SQLite gave up waiting for another node's lock (each
/// attempt already waited `busy_timeout_ms`).
const BUSY_RETRIES: u32 = 3;

/// How many times as long as its last commit took the writer must have been idle for a
/// caller to commit on its own thread. At 4 a caller's thread does at most a fifth of the
/// writing: the runtime thread it blocks serves every socket, and at 5,000 msg/s a factor
/// of 1 (half the writing inline) raised the p99 of every event from 3 to 5 ms.
const IDLE_FACTOR: u64 = 4;

/// Past this many cached stream heads the head cache starts over.
const KNOWN_HEADS_CAP: usize = 200_000;

/// Past this many cached pairs the pair cache starts over.
const KNOWN_PAIRS_CAP: usize = 100_000;

/// One caller's write: its input, where to answer, and the result of the current attempt
/// (kept until the commit decides whether it stands).
pub(crate) struct Job<I, O> {
    input: I,
    reply: oneshot::Sender<StorageResult<O>>,
    result: Option<StorageResult<O>>,
}

impl<I, O> Job<I, O> {
    pub(crate) fn new(input: I) -> (Self, oneshot::Receiver<StorageResult<O>>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                input,
                reply,
                result: None,
            },
            rx,
        )
    }

    fn finish(self) {
        let result = self
            .result
            .unwrap_or_else(|| Err(StorageError::Backend("write was not executed".into())));
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.reply.send(result);
    }

    fn fail(self, e: StorageError) {
        let _ = self.reply.send(Err(e));
    }
}

pub(crate) struct MarkRead {
    pub user: String,
    pub partner: String,
    pub up_to: Option<String>,
}

pub(crate) struct PasswordHash {
    pub id: String,
    pub hash: String,
}

pub(crate) enum Command {
    Insert(Job<NewMessage, Inserted>),
    CreateUser(Job<NewUser, UserRecord>),
    SetPasswordHash(Job<PasswordHash, ()>),
    MarkRead(Job<MarkRead, ReadState>),
    State(Job<StateWrite, ()>),
    /// Sent by `close`: everything queued before it is committed, everything after it
    /// is refused.
    Shutdown(oneshot::Sender<()>),
}

impl Command {
    fn finish(self) {
        match self {
            Command::Insert(j) => j.finish(),
            Command::CreateUser(j) => j.finish(),
            Command::SetPasswordHash(j) => j.finish(),
            Command::MarkRead(j) => j.finish(),
            Command::State(j) => j.finish(),
            Command::Shutdown(done) => drop(done.send(())),
        }
    }

    fn fail(self, e: StorageError) {
        match self {
            Command::Insert(j) => j.fail(e),
            Command::CreateUser(j) => j.fail(e),
            Command::SetPasswordHash(j) => j.fail(e),
            Command::MarkRead(j) => j.fail(e),
            Command::State(j) => j.fail(e),
            Command::Shutdown(done) => drop(done.send(())),
        }
    }
}

/// Why one command failed: a rule of the store (answered to that caller only) or SQLite.
enum Failure {
    Storage(StorageError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Storage(e)
    }
}

/// The writer, shared by its thread and by callers that find it idle: a write that comes
/// when nothing is queued or committing, and the writer has been idle for several times as
/// long as its last commit took (`IDLE_FACTOR`), is committed at once on the caller's thread
/// (`Shared::try_now`). That spares the two thread hops (the wake of the writer thread,
/// and its wake of the caller's task) which cost more than the commit at moderate rates.
/// Writes that come closer together (a burst, flat out) queue for the writer thread and
/// are batched as before.
pub(crate) struct Shared {
    /// `None` once the writer thread has stopped.
    writer: Mutex<Option<Writer>>,
    /// Commands handed to the queue and not yet answered.
    pending: AtomicUsize,
    /// Callers may commit themselves (`synchronous = normal` and no linger: with `full`
    /// each commit waits for an fsync, which must not block the async runtime).
    inline: bool,
    /// Nanoseconds after `epoch` before which a caller does not commit itself: the end of
    /// the last commit plus `IDLE_FACTOR` times its duration.
    idle_from: AtomicU64,
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(writer: Writer, inline: bool) -> Arc<Self> {
        Arc::new(Shared {
            writer: Mutex::new(Some(writer)),
            pending: AtomicUsize::new(0),
            inline,
            idle_from: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A commit ran from `started` to now: callers wait for the writer to have been idle
    /// `IDLE_FACTOR` times as long before they commit themselves.
    fn committed(&self, started: Instant) {
        let now = Instant::now();
        let end = self.nanos(now);
        let took = end.saturating_sub(self.nanos(started));
        self.idle_from
            .store(end.saturating_add(took.saturating_mul(IDLE_FACTOR)), Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Option<Writer>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a command about to be queued, so no caller commits ahead of it.
    pub(crate) fn queued(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Undoes `queued` for `n` commands (answered, or never queued).
    pub(crate) fn answered(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
    }

    /// Commits `cmd` on the calling thread if nothing is queued or committing and no other
    /// node holds the write lock; otherwise gives it back, to be queued. Never waits.
    pub(crate) fn try_now(&self, cmd: Command) -> Option<Command> {
        if !self.inline
            || self.pending.load(Ordering::Acquire) != 0
            || self.nanos(Instant::now()) < self.idle_from.load(Ordering::Acquire)
        {
            return Some(cmd);
        }
        let Ok(mut slot) = self.writer.try_lock() else {
            return Some(cmd);
        };
        // Checked again under the lock: a command queued in between goes first.
        let Some(writer) = slot.as_mut().filter(|_| self.pending.load(Ordering::Acquire) == 0) else {
            return Some(cmd);
        };
        // The WAL restart runs on the writer thread, between two of its batches, and so
        // does the commit that starts the log over (it syncs the log's header).
        if writer.signals.restart_wanted.load(Ordering::Relaxed) || writer.signals.reset_due.load(Ordering::Acquire) {
            return Some(cmd);
        }
        let started = Instant::now();
        // The writer's own one-command batch: no allocation per commit.
        let mut batch = std::mem::take(&mut writer.alone);
        batch.push(cmd);
        let done = writer.commit_now(&mut batch);
        self.committed(started);
        let back = if done { None } else { batch.pop() };
        writer.alone = batch;
        back
    }
}

/// The writer thread: waits for queued commands and commits them in batches.
pub(crate) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Command>) {
    let mut batch = Vec::new();
    let mut shutdown = None;
    // `None` from the channel: the store was dropped and the queue is drained.
    while shutdown.is_none()
        && let Some(first) = rx.blocking_recv()
    {
        let mut slot = shared.lock();
        let Some(writer) = slot.as_mut() else { break };
        writer.gather(&mut rx, Some(first), &mut batch, &mut shutdown);
        if shutdown.is_none()
            && batch.len() < writer.max_batch
            && let Some(wait) = writer.linger.wait()
        {
            std::thread::sleep(wait);
            writer.gather(&mut rx, None, &mut batch, &mut shutdown);
        }
        writer.linger.taken(batch.len(), Instant::now());
        let taken = batch.len() + usize::from(shutdown.is_some());
        if !batch.is_empty() {
            let started = Instant::now();
            // Before the commit: a pass that copies the log back after this point sets it
            // again, and one that did before leaves the reset to this commit.
            writer.signals.reset_due.store(false, Ordering::Release);
            writer.commit(&mut batch);
            shared.committed(started);
        }
        if writer.signals.restart_wanted.swap(false, Ordering::Relaxed) {
            writer.restart_wal();
            writer.signals.reset_due.store(true, Ordering::Release);
        }
        drop(slot);
        shared.answered(taken);
    }
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        cmd.fail(StorageError::Closed);
    }
    // Closes the connection; callers that find the slot empty queue into a closed queue.
    shared.lock().take();
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

pub(crate) struct Writer {
    conn: Connection,
    clock: SharedClock,
    observer: Option<CommitObserver>,
    max_batch: usize,
    /// How long a small batch waits for more commands.
    linger: Linger,
    /// Kept empty between commits on a caller's thread, which borrow it as their batch.
    alone: Vec<Command>,
    /// Receivers known to exist (users are never deleted), sparing a lookup per insert.
    known_users: KnownIds<String>,
    /// Users found during the current attempt; trusted only once it commits.
    seen_users: Vec<String>,
    /// Pairs known to have a conversation row (rows are never deleted): `pair_hi`s by
    /// `pair_lo`, so a lookup needs no allocation.
    known_pairs: HashMap<String, HashSet<String>>,
    known_pair_count: usize,
    /// Pairs given a row during the current attempt; trusted only once it commits.
    seen_pairs: Vec<(String, String)>,
    /// Shared with the checkpointer: restart and reset of the WAL, commands committed.
    signals: Arc<WalSignals>,
    busy_timeout: Duration,
    /// This attempt wraps each command in a savepoint (see `guarded`).
    isolate: bool,
    /// When a state write may next purge expired state rows.
    next_state_purge_ms: i64,
    /// Stream heads this writer assigned or read, trusted while no other connection has
    /// written the file (`PRAGMA data_version`) and no attempt was undone.
    heads: HashMap<String, u64>,
    data_version: i64,
}

/// `storage.sqlite`'s `max_batch` (commands per transaction), `linger_us` and `busy_timeout_ms` (how
/// long a write waits for another connection's lock), and what the writer reports to.
pub(crate) struct WriterOptions {
    pub clock: SharedClock,
    pub max_batch: usize,
    /// Longest wait for more commands to join a small batch (`linger_us`).
    pub linger: Duration,
    pub busy_timeout: Duration,
    /// Hears each commit: how many commands, how long.
    pub observer: Option<CommitObserver>,
    /// Shared with the checkpointer (`WalSignals`).
    pub signals: Arc<WalSignals>,
}

impl Writer {
    pub(crate) fn new(conn: Connection, o: WriterOptions) -> Self {
        Writer {
            conn,
            clock: o.clock,
            observer: o.observer,
            max_batch: o.max_batch,
            linger: Linger::new(o.linger),
            alone: Vec::with_capacity(1),
            known_users: KnownIds::default(),
            seen_users: Vec::new(),
            known_pairs: HashMap::new(),
            known_pair_count: 0,
            seen_pairs: Vec::new(),
            signals: o.signals,
            busy_timeout: o.busy_timeout,
            isolate: false,
            next_state_purge_ms: 0,
            heads: HashMap::new(),
            data_version: 0,
        }
    }

    /// Adds what is queued (after `first`) to the batch, up to `max_batch` or a shutdown.
    fn gather(
        &self,
        rx: &mut mpsc::Receiver<Command>,
        first: Option<Command>,
        batch: &mut Vec<Command>,
        shutdown: &mut Option<oneshot::Sender<()>>,
    ) {
        let mut next = first.or_else(|| rx.try_recv().ok());
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Shutdown(done) => *shutdown = Some(done),
                cmd => batch.push(cmd),
            }
            if shutdown.is_none() && batch.len() < self.max_batch {
                next = rx.try_recv().ok();
            }
        }
    }

    /// Copies the WAL's remaining tail back and rewinds it, between two batches. A
    /// reader holding an old snapshot only gets a short grace; the next pass retries.
    fn restart_wal(&mut self) {
        let _ = self.conn.busy_timeout(Duration::from_millis(50));
        match checkpoint(&self.conn, "RESTART") {
            Ok(_) => {}
            Err(e) if is_busy(&e) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite WAL restart failed"),
        }
        let _ = self.conn.busy_timeout(self.busy_timeout);
    }

    fn commit(&mut self, batch: &mut Vec<Command>) {
        let started = Instant::now();
        let outcome = self.run_batch(batch, BUSY_RETRIES);
        self.settle(batch, outcome, started);
    }

    /// Commits on the caller's thread without waiting for another node's lock: false (the
    /// batch untouched, nothing written) when that lock is taken.
    fn commit_now(&mut self, batch: &mut Vec<Command>) -> bool {
        let started = Instant::now();
        let _ = self.conn.busy_timeout(Duration::ZERO);
        let outcome = self.run_batch(batch, 0);
        let _ = self.conn.busy_timeout(self.busy_timeout);
        if matches!(&outcome, Err(e) if is_busy(e)) {
            return false;
        }
        self.settle(batch, outcome, started);
        true
    }

    /// Runs the batch's transaction until it commits, retrying a lock held by another node
    /// up to `busy_retries` times and isolating a failing command.
    fn run_batch(&mut self, batch: &mut [Command], busy_retries: u32) -> rusqlite::Result<()> {
        let mut attempt = 0;
        self.isolate = false;
        loop {
            self.seen_users.clear();
            self.seen_pairs.clear();
            match self.attempt(batch) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if !self.conn.is_autocommit() {
                        let _ = self.conn.execute_batch("ROLLBACK");
                    }
                    // Positions given out by the undone attempt are not taken.
                    self.heads.clear();
                    if is_busy(&e) && attempt < busy_retries {
                        attempt += 1;
                        tracing::warn!(attempt, "sqlite is locked by another connection; retrying the batch");
                        std::thread::sleep(Duration::from_millis(10 << attempt));
                        continue;
                    }
                    if !is_busy(&e) && !self.isolate {
                        tracing::warn!(error = %e, "a write failed inside a batch; running the batch again command by command");
                        self.isolate = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Answers every caller of the batch with the outcome of its transaction.
    fn settle(&mut self, batch: &mut Vec<Command>, outcome: rusqlite::Result<()>, started: Instant) {
        match outcome {
            Ok(()) => {
                self.known_users.extend(self.seen_users.drain(..));
                if self.known_pair_count + self.seen_pairs.len() > KNOWN_PAIRS_CAP {
                    self.known_pairs.clear();
                    self.known_pair_count = 0;
                }
                for (lo, hi) in self.seen_pairs.drain(..) {
                    if self.known_pairs.entry(lo).or_default().insert(hi) {
                        self.known_pair_count += 1;
                    }
                }
                self.signals.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Some(observe) = &self.observer {
                    observe(batch.len(), started.elapsed());
                }
                batch.drain(..).for_each(Command::finish);
            }
            Err(e) => {
                tracing::error!(error = %e, batch = batch.len(), "sqlite group commit failed");
                let err = if is_busy(&e) { StorageError::Busy } else { backend(e) };
                batch.drain(..).for_each(|c| c.fail(err.clone()));
            }
        }
    }

    fn attempt(&mut self, batch: &mut [Command]) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        // Another node committed since: the heads it moved are unknown here.
        // Cached: a statement prepared per batch showed up in profiles of every commit.
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if version != self.data_version || self.heads.len() > KNOWN_HEADS_CAP {
            self.heads.clear();
            self.data_version = version;
        }
        for cmd in batch.iter_mut() {
            match cmd {
                Command::Insert(job) => job.result = Some(self.guarded(|w| w.insert(&job.input))?),
                Command::CreateUser(job) => job.result = Some(self.guarded(|w| w.create_user(&job.input))?),
                Command::SetPasswordHash(job) => job.result = Some(self.guarded(|w| w.set_password_hash(&job.input))?),
                Command::MarkRead(job) => job.result = Some(self.guarded(|w| w.mark_read(&job.input))?),
                Command::State(job) => job.result = Some(self.guarded(|w| w.state(&job.input))?),
                Command::Shutdown(_) => {}
            }
        }
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    /// Runs one command. Every command checks its rules before it writes, so a rule
    /// failure leaves nothing behind and becomes that caller's answer. An SQLite error
    /// may leave a half-done command: the attempt is abandoned, and the batch runs again
    /// with a savepoint around each command (`isolate`), which undoes only that one.
    /// Savepoints are not the default because each one makes SQLite copy every page the
    /// batch already dirtied (the shared append pages) into its statement journal.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Failure>) -> rusqlite::Result<StorageResult<T>> {
        if !self.isolate {
            return match f(self) {
                Ok(v) => Ok(Ok(v)),
                Err(Failure::Storage(e)) => Ok(Err(e)),
                Err(Failure::Sql(e)) => Err(e),
            };
        }
        self.conn.prepare_cached("SAVEPOINT command")?.execute([])?;
        let result = match f(self) {
            Ok(v) => Ok(v),
            Err(Failure::Sql(e)) if is_busy(&e) => return Err(e),
            Err(Failure::Sql(e)) => Err(backend(e)),
            Err(Failure::Storage(e)) => Err(e),
        };
        if result.is_err() {
            self.conn.prepare_cached("ROLLBACK TO command")?.execute([])?;
            self.heads.clear();
        }
        self.conn.prepare_cached("RELEASE command")?.execute([])?;
        Ok(result)
    }

    fn user_exists(&mut self, id: &str) -> rusqlite::Result<bool> {
        if self.known_users.contains(id) {
            return Ok(true);
        }
        let found = self
            .conn
            .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
            .exists([id])?;
        if found {
            self.seen_users.push(id.to_owned());
        }
        Ok(found)
    }

    /// Whether the pair already has its conversation row, as far as this writer knows (or
    /// this attempt wrote it); a pair it does not know costs one `INSERT OR IGNORE`, which
    /// changes nothing if another node wrote the row.
    fn pair_known(&self, lo: &str, hi: &str) -> bool {
        self.known_pairs.get(lo).is_some_and(|his| his.contains(hi))
            || self.seen_pairs.iter().any(|(l, h)| l == lo && h == hi)
    }

    fn insert(&mut self, m: &NewMessage) -> Result<Inserted, Failure> {
        if let Some(client_msg_id) = &m.client_msg_id {
            // Also finds a repeat committed earlier in this very batch.
            let existing = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2"
                ))?
                .query_row(params![m.sender_id, client_msg_id], rows::message)
                .optional()?;
            if let Some(repeat) = repeat_of(existing) {
                return Ok(repeat);
            }
        }
        if !self.user_exists(&m.receiver_id)? {
            return Err(StorageError::NotFound("receiver not found".into()).into());
        }
        let now = self.clock.now_millis();
        let id = new_id(now.div_euclid(1000));
        let (lo, hi) = pair(&m.sender_id, &m.receiver_id);
        let sender_pos = self.next_pos(&m.sender_id)?;
        let receiver_pos = if m.receiver_id == m.sender_id {
            sender_pos
        } else {
            self.next_pos(&m.receiver_id)?
        };
        self.conn
            .prepare_cached(
                "INSERT INTO messages
                   (id, sender_id, receiver_id, pair_lo, pair_hi, to_lo, body, client_msg_id, created_at, updated_at,
                    sender_pos, receiver_pos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
            )?
            .execute(params![
                id,
                m.sender_id,
                m.receiver_id,
                lo,
                hi,
                m.receiver_id == lo,
                m.message,
                m.client_msg_id,
                now,
                sender_pos as i64,
                receiver_pos as i64
            ])?;
        let seq = self.conn.last_insert_rowid();
        streams::mark(&self.conn, &m.sender_id, sender_pos, seq)?;
        if m.receiver_id != m.sender_id {
            streams::mark(&self.conn, &m.receiver_id, receiver_pos, seq)?;
        }
        // A pair's conversation row holds only the read cursors: written once, when the
        // pair first talks (see schema.rs, migration 2).
        if !self.pair_known(lo, hi) {
            self.conn
                .prepare_cached("INSERT OR IGNORE INTO conversations (pair_lo, pair_hi) VALUES (?1, ?2)")?
                .execute([lo, hi])?;
            self.seen_pairs.push((lo.to_owned(), hi.to_owned()));
        }
        let message = confab_sdk::storage::Message {
            id,
            sender_id: m.sender_id.clone(),
            receiver_id: m.receiver_id.clone(),
            message: m.message.clone(),
            client_msg_id: m.client_msg_id.clone(),
            created_at: from_millis(now),
            updated_at: from_millis(now),
            pos: None,
            positions: Some((sender_pos, receiver_pos)),
        };
        Ok(Inserted { message, created: true })
    }

    /// Takes the next position of `user`'s stream (inside the current transaction).
    fn next_pos(&mut self, user: &str) -> rusqlite::Result<u64> {
        let head = match self.heads.get(user) {
            Some(h) => *h,
            None => streams::head(&self.conn, user)?,
        };
        self.heads.insert(user.to_owned(), head + 1);
        Ok(head + 1)
    }

    fn create_user(&mut self, u: &NewUser) -> Result<UserRecord, Failure> {
        let lower = u.username.to_lowercase();
        let taken = self
            .conn
            .prepare_cached("SELECT 1 FROM users WHERE username_lower = ?1")?
            .exists([&lower])?;
        if taken {
            return Err(StorageError::Conflict("username is taken".into()).into());
        }
        let now = self.clock.now_millis();
        let id = new_id(now.div_euclid(1000));
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO users (id, username, username_lower, display_name, password_hash, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )?
            .execute(params![id, u.username, lower, u.display_name, u.password_hash, now]);
        match inserted {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                return Err(StorageError::Conflict("username is taken".into()).into());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(UserRecord {
            id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            password_hash: u.password_hash.clone(),
            created_at: from_millis(now),
            updated_at: from_millis(now),
        })
    }

    fn state(&mut self, w: &StateWrite) -> Result<(), Failure> {
        let now = self.clock.now_millis();
        let purge = (now >= self.next_state_purge_ms).then_some(now);
        state::write(&self.conn, w, purge)?;
        if purge.is_some() {
            // Set before the commit: a purge rolled back only waits for the next interval.
            self.next_state_purge_ms = now + PURGE_INTERVAL_MS;
        }
        Ok(())
    }

    fn set_password_hash(&mut self, p: &PasswordHash) -> Result<(), Failure> {
        let now = self.clock.now_millis();
        let changed = self
            .conn
            .prepare_cached("UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![p.id, p.hash, now])?;
        if changed == 0 {
            return Err(StorageError::NotFound("user not found".into()).into());
        }
        Ok(())
    }

    fn mark_read(&mut self, r: &MarkRead) -> Result<ReadState, Failure> {
        let (lo, hi) = pair(&r.user, &r.partner);
        let side = side(&r.user, &r.partner);
        let state = self
            .conn
            .prepare_cached(&format!(
                "SELECT (SELECT max(seq) FROM messages WHERE pair_lo = ?1 AND pair_hi = ?2),
                        {side}_read_seq, {side}_read_id, {side}_read_at
                 FROM conversations WHERE pair_lo = ?1 AND pair_hi = ?2"
            ))?
            .query_row([lo, hi], |row| {
                Ok((
                    row.get::<_, Option<i64>>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                ))
            })
            .optional()?;
        let Some((Some(last_seq), read_seq, read_id, read_at)) = state else {
            // No message between them yet: nothing to read, and no message to name.
            if r.up_to.is_some() {
                return Err(StorageError::InvalidCursor("upTo".into()).into());
            }
            return Ok(ReadState {
                user_id: r.user.clone(),
                partner_id: r.partner.clone(),
                up_to: None,
                read_at: None,
                unread: 0,
            });
        };
        let target_seq = match &r.up_to {
            Some(id) => self
                .conn
                .prepare_cached("SELECT seq FROM messages WHERE id = ?1 AND pair_lo = ?2 AND pair_hi = ?3")?
                .query_row([id.as_str(), lo, hi], |row| row.get::<_, i64>(0))
                .optional()?
                .ok_or_else(|| StorageError::InvalidCursor("upTo".into()))?,
            None => last_seq,
        };
        let (seq, up_to, read_at) = match (read_seq, read_id) {
            (Some(current), Some(id)) if current >= target_seq => (current, id, read_at),
            _ => {
                let id = self
                    .conn
                    .prepare_cached("SELECT id FROM messages WHERE seq = ?1")?
                    .query_row([target_seq], |row| row.get::<_, String>(0))?;
                (target_seq, id, Some(self.clock.now_millis()))
            }
        };
        // Read up to the newest message: nothing can be unread, no need to count.
        let unread: i64 = if seq >= last_seq {
            0
        } else {
            rows::unread(&self.conn, lo, hi, seq, side == "lo")?
        };
        self.conn
            .prepare_cached(&format!(
                "UPDATE conversations
                 SET {side}_read_seq = ?3, {side}_read_id = ?4, {side}_read_at = ?5
                 WHERE pair_lo = ?1 AND pair_hi = ?2"
            ))?
            .execute(params![lo, hi, seq, up_to, read_at])?;
        Ok(ReadState {
            user_id: r.user.clone(),
            partner_id: r.partner.clone(),
            up_to: Some(up_to),
            read_at: read_at.map(from_millis),
            unread: unread as u64,
        })
    }
}
