//! The embedded storage backend: one SQLite file in WAL mode, written by one group-commit
//! thread and read through a small pool of query-only connections. Several processes
//! may open the same file (the multi-node setup on one host).

mod checkpoint;
mod config;
mod linger;
mod reader;
mod rows;
mod schema;
mod secret;
mod state;
mod streams;
mod writer;

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use confab_sdk::async_trait;
use confab_sdk::backend::{self, Admission, check_config};
use confab_sdk::clock::SharedClock;
use confab_sdk::futures_util::future::BoxFuture;
use confab_sdk::storage::{
    CommitObserver, Conversation, Inserted, Message, MessageStore, NewMessage, NewUser, PageQuery, ReadState,
    StateEntry, StateStore, StorageError, StorageResult, StreamPage, UserRecord, UserStore,
};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

pub use config::SqliteConfig;

use checkpoint::WalSignals;
use reader::ReaderPool;
use state::StateWrite;
use writer::{Command, Job, MarkRead, PasswordHash, Shared, Writer, WriterOptions};

/// Users and messages in one SQLite file. See `docs/storage.md`.
pub struct SqliteStore {
    queue: mpsc::Sender<Command>,
    /// The writer, which a caller commits on itself when it finds it idle.
    shared: Arc<Shared>,
    admission: Admission,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Dropping the sender stops the checkpointer.
    checkpointer: Mutex<Option<(std_mpsc::Sender<()>, JoinHandle<()>)>>,
    readers: Arc<ReaderPool>,
    /// The database file, beside which the deployment secret lives.
    path: std::path::PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("closed", &self.admission.is_closed())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `cfg.path`, migrates it, and starts the
    /// writer thread.
    pub async fn open(
        cfg: &SqliteConfig,
        clock: SharedClock,
        observer: Option<CommitObserver>,
    ) -> Result<Arc<SqliteStore>, StorageError> {
        check_config("sqlite", &cfg.problems())?;
        let setup = cfg.clone();
        let conns = tokio::task::spawn_blocking(move || connect_all(&setup))
            .await
            .map_err(|e| StorageError::Backend(format!("sqlite open task failed: {e}")))??;
        let thread_failed = |e: std::io::Error| StorageError::Backend(format!("cannot start an sqlite thread: {e}"));
        let signals = Arc::new(WalSignals::default());
        let (stop, stopped) = std_mpsc::channel();
        let checkpoint_signals = signals.clone();
        let checkpoint_conn = conns.checkpointer;
        let checkpointer = std::thread::Builder::new()
            .name("confab-sqlite-checkpoint".into())
            .spawn(move || checkpoint::run(checkpoint_conn, checkpoint_signals, stopped))
            .map_err(thread_failed)?;
        let (queue, rx) = mpsc::channel(cfg.queue_capacity);
        let writer = Writer::new(
            conns.writer,
            WriterOptions {
                clock,
                observer,
                max_batch: cfg.max_batch,
                linger: Duration::from_micros(cfg.linger_us),
                signals,
                busy_timeout: Duration::from_millis(cfg.busy_timeout_ms),
            },
        );
        let inline = cfg.synchronous_pragma() == Some("NORMAL") && cfg.linger_us == 0;
        let shared = Shared::new(writer, inline);
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || writer::run(thread_shared, rx))
            .map_err(thread_failed)?;
        Ok(Arc::new(SqliteStore {
            queue,
            shared,
            // The queue bounds itself (`queue_capacity`).
            admission: Admission::new(usize::MAX),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some((stop, checkpointer))),
            readers: Arc::new(ReaderPool::new(conns.readers)),
            path: cfg.path.clone().into(),
        }))
    }

    /// Stops accepting writes (later ones get `Closed`), commits everything already
    /// queued, and waits for the writer thread to end. Also reachable without the trait
    /// in scope.
    pub async fn close(&self) {
        self.admission.close();
        let (done, finished) = oneshot::channel();
        // Waits for room in a full queue: what is queued ahead of it still commits.
        self.shared.queued();
        if self.queue.send(Command::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let checkpointer = self.checkpointer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(writer) = writer {
                let _ = writer.join();
            }
            if let Some((stop, checkpointer)) = checkpointer {
                drop(stop);
                let _ = checkpointer.join();
            }
        })
        .await;
    }

    /// Commits the command now when the writer is idle, else hands it to the writer's
    /// queue now: either way the order of calls is the order of commits.
    fn enqueue(&self, cmd: Command) -> StorageResult<()> {
        self.admission.check_open()?;
        let Some(cmd) = self.shared.try_now(cmd) else {
            return Ok(());
        };
        self.shared.queued();
        self.queue.try_send(cmd).map_err(|e| {
            self.shared.answered(1);
            match e {
                mpsc::error::TrySendError::Full(_) => StorageError::Busy,
                mpsc::error::TrySendError::Closed(_) => StorageError::Closed,
            }
        })
    }

    fn write<T: Send + 'static>(
        &self,
        cmd: Command,
        reply: oneshot::Receiver<StorageResult<T>>,
    ) -> BoxFuture<'static, StorageResult<T>> {
        let queued = self.enqueue(cmd);
        Box::pin(async move {
            queued?;
            backend::reply(reply).await
        })
    }
}

/// How long opening waits for another node's schema migration (a rewrite of every
/// message row can take minutes on a large file).
const MIGRATION_WAIT: Duration = Duration::from_secs(600);

/// How much of the database file each reader maps into memory (address space, not RAM).
const READER_MMAP_BYTES: i64 = 1 << 30;

fn connect(path: &Path, cfg: &SqliteConfig) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

struct Connections {
    writer: Connection,
    checkpointer: Connection,
    readers: Vec<Connection>,
}

/// The writer connection (WAL, durability level, schema up to date), the checkpointer's
/// and the readers.
fn connect_all(cfg: &SqliteConfig) -> StorageResult<Connections> {
    let path = Path::new(&cfg.path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Backend(format!("cannot create {}: {e}", dir.display())))?;
    }
    let fail = |what: &str, e: rusqlite::Error| StorageError::Backend(format!("sqlite {what} ({}): {e}", cfg.path));
    let mut conn = connect(path, cfg).map_err(|e| fail("open", e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| fail("journal_mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Backend(format!(
            "sqlite refused WAL mode for {} (got {mode})",
            cfg.path
        )));
    }
    let synchronous = cfg.synchronous_pragma().unwrap_or("FULL");
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| fail("synchronous", e))?;
    // The checkpointer thread copies the WAL back (see checkpoint.rs), and a WAL that
    // grew during a burst shrinks again when it is restarted. A page cache large enough
    // for the hot index pages spares the writer most reads.
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
    )
    .map_err(|e| fail("pragmas", e))?;
    // A node booting while another migrates a large file waits for it rather than fail.
    conn.busy_timeout(MIGRATION_WAIT).map_err(|e| fail("busy_timeout", e))?;
    schema::migrate(&mut conn).map_err(|e| StorageError::Backend(format!("sqlite migration ({}): {e}", cfg.path)))?;
    conn.busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))
        .map_err(|e| fail("busy_timeout", e))?;
    let readers = (0..cfg.readers)
        .map(|_| {
            let r = connect(path, cfg)?;
            r.pragma_update(None, "query_only", true)?;
            // Reads walk random message pages; mapping the file spares a syscall per page.
            r.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
            Ok(r)
        })
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| fail("reader", e))?;
    let checkpointer = connect(path, cfg).map_err(|e| fail("checkpointer", e))?;
    checkpointer
        .pragma_update(None, "synchronous", synchronous)
        .map_err(|e| fail("synchronous", e))?;
    Ok(Connections {
        writer: conn,
        checkpointer,
        readers,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord> {
        let (job, reply) = Job::new(user);
        self.write(Command::CreateUser(job), reply).await
    }

    async fn user_by_id(&self, id: &str) -> StorageResult<Option<UserRecord>> {
        let id = id.to_owned();
        self.readers.run(move |c| reader::user_by_id(c, &id)).await
    }

    async fn user_by_username(&self, username: &str) -> StorageResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.readers.run(move |c| reader::user_by_username(c, &username)).await
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StorageResult<()> {
        let (job, reply) = Job::new(PasswordHash {
            id: id.to_owned(),
            hash: hash.to_owned(),
        });
        self.write(Command::SetPasswordHash(job), reply).await
    }

    async fn deployment_secret(&self) -> StorageResult<String> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || secret::load_or_create(&path))
            .await
            .map_err(|e| StorageError::Backend(format!("deployment secret task failed: {e}")))?
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn put_state(&self, kind: &str, key: &str, value: &str, expires_ms: i64) -> StorageResult<()> {
        let (job, reply) = Job::new(StateWrite::Put {
            kind: kind.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            expires_ms,
        });
        self.write(Command::State(job), reply).await
    }

    async fn delete_state(&self, kind: &str, key: &str) -> StorageResult<()> {
        let (job, reply) = Job::new(StateWrite::Delete {
            kind: kind.to_owned(),
            key: key.to_owned(),
        });
        self.write(Command::State(job), reply).await
    }

    async fn load_state(&self, kind: &str, now_ms: i64) -> StorageResult<Vec<StateEntry>> {
        let kind = kind.to_owned();
        self.readers
            .run(move |c| state::load(c, &kind, now_ms).map_err(rows::backend))
            .await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    fn insert(&self, message: NewMessage) -> BoxFuture<'static, StorageResult<Inserted>> {
        let (job, reply) = Job::new(message);
        self.write(Command::Insert(job), reply)
    }

    async fn history(&self, a: &str, b: &str, page: PageQuery) -> StorageResult<Vec<Message>> {
        let (a, b) = (a.to_owned(), b.to_owned());
        self.readers.run(move |c| reader::history(c, &a, &b, &page)).await
    }

    async fn since(&self, user: &str, after: Option<&str>, limit: usize) -> StorageResult<(Vec<Message>, bool)> {
        let (user, after) = (user.to_owned(), after.map(str::to_owned));
        self.readers
            .run(move |c| reader::since(c, &user, after.as_deref(), limit))
            .await
    }

    async fn stream(&self, user: &str, after_pos: u64, limit: usize) -> StorageResult<StreamPage> {
        let user = user.to_owned();
        self.readers
            .run(move |c| streams::page(c, &user, after_pos, limit).map_err(rows::backend))
            .await
    }

    async fn conversations(&self, user: &str, before: Option<&str>, limit: usize) -> StorageResult<Vec<Conversation>> {
        let (user, before) = (user.to_owned(), before.map(str::to_owned));
        self.readers
            .run(move |c| reader::conversations(c, &user, before.as_deref(), limit))
            .await
    }

    async fn mark_read(&self, user: &str, partner: &str, up_to: Option<&str>) -> StorageResult<ReadState> {
        let (job, reply) = Job::new(MarkRead {
            user: user.to_owned(),
            partner: partner.to_owned(),
            up_to: up_to.map(str::to_owned),
        });
        self.write(Command::MarkRead(job), reply).await
    }

    async fn ping(&self) -> StorageResult<()> {
        // A closed queue also means the writer thread is gone: not ready for writes.
        if self.admission.is_closed() || self.queue.is_closed() {
            return Err(StorageError::Closed);
        }
        self.readers.run(reader::ping).await
    }

    async fn close(&self) {
        SqliteStore::close(self).await
    }
}
