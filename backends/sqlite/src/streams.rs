//! Per-user streams on SQLite: each message row holds its position in the sender's stream
//! (`sender_pos`) and in the receiver's (`receiver_pos`; equal for a note to self). The
//! writer assigns them inside the commit, so positions follow commit order (and `seq`
//! order, per user) and a stream never has a hole; readers see them in one snapshot.
//!
//! A user's stream is not indexed by position (schema migration 5): two user-keyed
//! indexes cost each message two more random pages per commit, more than half of the
//! insert throughput. A user's messages are found through their conversations instead
//! (`conversations`, then `messages_pair` by `seq`), and `stream_marks` remembers the
//! `seq` of every [`MARK_EVERY`]th position, so a page starts at most that many rows
//! early and stops at the next mark past its end: reading a page costs one index seek per
//! conversation of the user and at most `limit + 2 × MARK_EVERY` rows, however long the
//! stream.

use confab_sdk::storage::{Message, StreamPage};
use rusqlite::{Connection, OptionalExtension, params};

use crate::rows::{self, MESSAGE_COLUMNS};

/// Every this many positions of a user's stream get a mark.
pub(crate) const MARK_EVERY: u64 = 64;

/// Records the `seq` of `user`'s position `pos` if it is a marked one.
pub(crate) fn mark(conn: &Connection, user: &str, pos: u64, seq: i64) -> rusqlite::Result<()> {
    if pos.is_multiple_of(MARK_EVERY) {
        conn.prepare_cached("INSERT OR REPLACE INTO stream_marks (user_id, pos, seq) VALUES (?1, ?2, ?3)")?
            .execute(params![user, pos as i64, seq])?;
    }
    Ok(())
}

/// The `seq` of `user`'s marked position `pos` (0 for position 0).
fn mark_seq(conn: &Connection, user: &str, pos: u64) -> rusqlite::Result<Option<i64>> {
    if pos == 0 {
        return Ok(Some(0));
    }
    conn.prepare_cached("SELECT seq FROM stream_marks WHERE user_id = ?1 AND pos = ?2")?
        .query_row(params![user, pos as i64], |r| r.get(0))
        .optional()
}

/// `user`'s messages with `after < seq <= upto`, with their `seq`, in `seq` (= stream)
/// order, at most `limit`: one range of `messages_pair` per conversation of the user.
fn between(
    conn: &Connection,
    user: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, Message)>> {
    conn.prepare_cached(&format!(
        "SELECT messages.seq, {MESSAGE_COLUMNS} FROM (
             SELECT pair_lo AS lo, pair_hi AS hi FROM conversations WHERE pair_lo = ?1
             UNION ALL
             SELECT pair_lo, pair_hi FROM conversations WHERE pair_hi = ?1 AND pair_lo <> ?1
         ) AS c CROSS JOIN messages
         ON messages.pair_lo = c.lo AND messages.pair_hi = c.hi AND messages.seq > ?2 AND messages.seq <= ?3
         ORDER BY messages.seq LIMIT ?4"
    ))?
    .query_map(params![user, after, upto, limit as i64], |r| {
        Ok((r.get(0)?, rows::message_at(r, 1)?))
    })?
    .collect()
}

/// The last position of `user`'s stream (0 if empty), as the connection sees it: the last
/// mark, then the fewer than [`MARK_EVERY`] messages after it.
pub(crate) fn head(conn: &Connection, user: &str) -> rusqlite::Result<u64> {
    let (pos, seq) = conn
        .prepare_cached("SELECT pos, seq FROM stream_marks WHERE user_id = ?1 ORDER BY pos DESC LIMIT 1")?
        .query_row([user], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    let (mut head, mut from) = (pos, seq);
    // Fewer than MARK_EVERY rows follow the last mark; a full batch means a mark is
    // missing (a file an older build wrote badly): read on rather than stop short.
    loop {
        let rows = between(conn, user, from, i64::MAX, MARK_EVERY as usize)?;
        if let Some((seq, last)) = rows.last() {
            head = head.max(last.pos_for(user).unwrap_or(0));
            from = *seq;
        }
        if rows.len() < MARK_EVERY as usize {
            return Ok(head);
        }
    }
}

/// `user`'s stream after `after`, at most `limit` messages, and its head, in one read
/// transaction (one snapshot).
pub(crate) fn page(conn: &Connection, user: &str, after: u64, limit: usize) -> rusqlite::Result<StreamPage> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let read = (|| {
        let head = head(conn, user)?;
        if limit == 0 || after >= head {
            return Ok(StreamPage {
                messages: Vec::new(),
                has_more: false,
                head_pos: head,
            });
        }
        // From the mark at or before `after` to the first mark past the page's end.
        let start = mark_seq(conn, user, after - after % MARK_EVERY)?.unwrap_or(0);
        let end_mark = (after + limit as u64 + 1).div_ceil(MARK_EVERY) * MARK_EVERY;
        let end = mark_seq(conn, user, end_mark)?.unwrap_or(i64::MAX);
        let scan = limit + 1 + 2 * MARK_EVERY as usize;
        let mut messages: Vec<Message> = between(conn, user, start, end, scan)?
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.pos_for(user).is_some_and(|p| p > after))
            .take(limit + 1)
            .collect();
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        Ok(StreamPage {
            messages,
            has_more,
            head_pos: head,
        })
    })();
    conn.prepare_cached("COMMIT")?.execute([])?;
    read
}
