//! Reads: a few query-only connections used from `spawn_blocking`, and the queries.

use std::sync::{Arc, Mutex};

use confab_sdk::storage::{Conversation, Message, PageQuery, StorageError, StorageResult, UserRecord};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Semaphore;

use crate::rows::{self, MESSAGE_COLUMNS, USER_COLUMNS, backend, pair};

pub(crate) struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: a read waits here (asynchronously) rather than
    /// occupying a blocking thread while every connection is busy.
    permits: Arc<Semaphore>,
}

/// A connection borrowed from the pool; it goes back even if the query panics.
struct Lease<'a> {
    pool: &'a ReaderPool,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
    }
}

impl ReaderPool {
    pub(crate) fn new(conns: Vec<Connection>) -> Self {
        let permits = Arc::new(Semaphore::new(conns.len()));
        ReaderPool {
            idle: Mutex::new(conns),
            permits,
        }
    }

    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let lease = Lease { pool: &pool, conn };
            let conn = lease
                .conn
                .as_ref()
                .ok_or_else(|| StorageError::Backend("no idle sqlite reader".into()))?;
            f(conn)
        })
        .await
        .map_err(|e| StorageError::Backend(format!("sqlite read task failed: {e}")))?
    }
}

pub(crate) fn user_by_id(conn: &Connection, id: &str) -> StorageResult<Option<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], rows::user).optional())
        .map_err(backend)
}

pub(crate) fn user_by_username(conn: &Connection, username: &str) -> StorageResult<Option<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username_lower = ?1"))
        .and_then(|mut s| s.query_row([username.to_lowercase()], rows::user).optional())
        .map_err(backend)
}

/// The sequence number of message `id` if it belongs to the pair, else `InvalidCursor(name)`.
fn pair_cursor(conn: &Connection, lo: &str, hi: &str, id: Option<&str>, name: &str) -> StorageResult<Option<i64>> {
    let Some(id) = id else { return Ok(None) };
    conn.prepare_cached("SELECT seq FROM messages WHERE id = ?1 AND pair_lo = ?2 AND pair_hi = ?3")
        .and_then(|mut s| s.query_row([id, lo, hi], |r| r.get::<_, i64>(0)).optional())
        .map_err(backend)?
        .map(Some)
        .ok_or_else(|| StorageError::InvalidCursor(name.into()))
}

pub(crate) fn history(conn: &Connection, a: &str, b: &str, page: &PageQuery) -> StorageResult<Vec<Message>> {
    let (lo, hi) = pair(a, b);
    let before = pair_cursor(conn, lo, hi, page.before.as_deref(), "before")?;
    let after = pair_cursor(conn, lo, hi, page.after.as_deref(), "after")?;
    if page.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let before = before.unwrap_or(i64::MAX);
    let result = match after {
        // Both ranges walk messages_pair (pair_lo, pair_hi, seq) and stop after `limit`.
        Some(after) => conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE pair_lo = ?1 AND pair_hi = ?2 AND seq > ?3 AND seq < ?4
                 ORDER BY seq LIMIT ?5"
            ))
            .and_then(|mut s| {
                s.query_map(params![lo, hi, after, before, limit], rows::message)?
                    .collect()
            }),
        None => conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE pair_lo = ?1 AND pair_hi = ?2 AND seq < ?3
                 ORDER BY seq DESC LIMIT ?4"
            ))
            .and_then(|mut s| s.query_map(params![lo, hi, before, limit], rows::message)?.collect())
            .map(|mut newest_first: Vec<Message>| {
                newest_first.reverse();
                newest_first
            }),
    };
    result.map_err(backend)
}

/// The pairs of `user` holding a message newer than `after`: the user's conversation rows
/// (the primary key where the user is `pair_lo`, `conversations_hi` for the rest), each
/// checked with one seek into messages_pair.
fn active_pairs(conn: &Connection, user: &str, after: i64) -> rusqlite::Result<Vec<(String, String)>> {
    const NEWER: &str = "EXISTS (SELECT 1 FROM messages AS m
                                 WHERE m.pair_lo = c.pair_lo AND m.pair_hi = c.pair_hi AND m.seq > ?2)";
    conn.prepare_cached(&format!(
        "SELECT pair_lo, pair_hi FROM conversations AS c WHERE pair_lo = ?1 AND {NEWER}
         UNION ALL
         SELECT pair_lo, pair_hi FROM conversations AS c WHERE pair_hi = ?1 AND pair_lo <> ?1 AND {NEWER}"
    ))?
    .query_map(params![user, after], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

pub(crate) fn since(
    conn: &Connection,
    user: &str,
    after: Option<&str>,
    limit: usize,
) -> StorageResult<(Vec<Message>, bool)> {
    // One snapshot for every step: a commit landing between them could otherwise put a
    // message below the returned cursor, where the next sync would never look.
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let after = match after {
        None => 0,
        Some(id) => tx
            .prepare_cached("SELECT seq FROM messages WHERE id = ?1 AND (sender_id = ?2 OR receiver_id = ?2)")
            .and_then(|mut s| s.query_row([id, user], |r| r.get::<_, i64>(0)).optional())
            .map_err(backend)?
            .ok_or_else(|| StorageError::InvalidCursor("after".into()))?,
    };
    // One row more than asked tells whether more follow.
    let fetch = limit.saturating_add(1);
    let fetch_sql = i64::try_from(fetch).unwrap_or(i64::MAX);
    // The first `fetch` sequence numbers of each active pair (index-only scans of
    // messages_pair), merged: the smallest `fetch` of them all are the answer.
    let mut seqs: Vec<i64> = Vec::new();
    for (lo, hi) in active_pairs(&tx, user, after).map_err(backend)? {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq FROM messages WHERE pair_lo = ?1 AND pair_hi = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![lo, hi, after, fetch_sql], |r| r.get::<_, i64>(0))
            .map_err(backend)?;
        for seq in rows {
            seqs.push(seq.map_err(backend)?);
        }
    }
    seqs.sort_unstable();
    seqs.truncate(fetch);
    let has_more = seqs.len() > limit;
    seqs.truncate(limit);
    let mut stmt = tx
        .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?1"))
        .map_err(backend)?;
    let messages = seqs
        .iter()
        .map(|seq| stmt.query_row([seq], rows::message))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    drop(stmt);
    tx.finish().map_err(backend)?;
    Ok((messages, has_more))
}

/// A user's conversations, newest first: at most `limit`, and with `before` (a message id)
/// only those whose newest message is older than it. For each pair, the newest message is
/// one seek into messages_pair; unread counts, the costly part (a walk of the index
/// entries after the user's read cursor, [`rows::unread`]), are counted for the page
/// only. One snapshot for all of it.
pub(crate) fn conversations(
    conn: &Connection,
    user: &str,
    before: Option<&str>,
    limit: usize,
) -> StorageResult<Vec<Conversation>> {
    let columns = MESSAGE_COLUMNS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let side = |me: &str, partner: &str, to_lo: bool| {
        format!(
            "SELECT m.seq AS newest, c.pair_{partner}, c.pair_lo, c.pair_hi, coalesce(c.{me}_read_seq, 0), {to_lo},
                    {columns}
             FROM conversations AS c
             JOIN messages AS m ON m.seq = (SELECT max(seq) FROM messages
                                            WHERE pair_lo = c.pair_lo AND pair_hi = c.pair_hi)"
        )
    };
    let (as_lo, as_hi) = (side("lo", "hi", true), side("hi", "lo", false));
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let before = match before {
        None => i64::MAX,
        // The cursor must be a message of one of the user's conversations.
        Some(id) => tx
            .prepare_cached("SELECT seq FROM messages WHERE id = ?1 AND (pair_lo = ?2 OR pair_hi = ?2)")
            .and_then(|mut s| s.query_row([id, user], |r| r.get::<_, i64>(0)).optional())
            .map_err(backend)?
            .ok_or_else(|| StorageError::InvalidCursor("before".into()))?,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let found = tx
        .prepare_cached(&format!(
            "SELECT * FROM ({as_lo} WHERE c.pair_lo = ?1
                            UNION ALL
                            {as_hi} WHERE c.pair_hi = ?1 AND c.pair_lo <> ?1)
             WHERE newest < ?2 ORDER BY newest DESC LIMIT ?3"
        ))
        .and_then(|mut s| {
            s.query_map(params![user, before, limit], |r| {
                let pair: (String, String) = (r.get(2)?, r.get(3)?);
                Ok((
                    r.get::<_, String>(1)?,
                    pair,
                    r.get::<_, i64>(4)?,
                    r.get::<_, bool>(5)?,
                    rows::message_at(r, 6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(backend)?;
    let list = found
        .into_iter()
        .map(|(partner, (lo, hi), read_seq, to_lo, last_message)| {
            Ok(Conversation {
                partner,
                last_at: last_message.created_at,
                unread: rows::unread(&tx, &lo, &hi, read_seq, to_lo)?.max(0) as u64,
                last_message,
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    tx.finish().map_err(backend)?;
    Ok(list)
}

pub(crate) fn ping(conn: &Connection) -> StorageResult<()> {
    conn.prepare_cached("SELECT 1")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(drop)
        .map_err(backend)
}
