//! Per-user streams on SQLite (schema migration 4): each message row holds its position in
//! the sender's stream (`sender_pos`) and in the receiver's (`receiver_pos`; equal for a
//! note to self), indexed by `(sender_id, sender_pos)` and `(receiver_id, receiver_pos)`.
//! The writer assigns them inside the commit, so positions follow commit order and a
//! stream never has a hole; readers see them in one snapshot.

use confab_sdk::storage::{Message, StreamPage};
use rusqlite::{Connection, params};

use super::rows::{self, MESSAGE_COLUMNS};

/// The last position of `user`'s stream (0 if empty), as the connection sees it.
pub(crate) fn head(conn: &Connection, user: &str) -> rusqlite::Result<u64> {
    let head: i64 = conn
        .prepare_cached(
            "SELECT max(coalesce((SELECT max(sender_pos) FROM messages WHERE sender_id = ?1), 0),
                        coalesce((SELECT max(receiver_pos) FROM messages WHERE receiver_id = ?1), 0))",
        )?
        .query_row([user], |r| r.get(0))?;
    Ok(head as u64)
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
        let want = limit as i64 + 1;
        // Both halves are index ranges; a note to self appears once (its sender half).
        let messages: Vec<Message> = conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM (
                     SELECT * FROM messages WHERE sender_id = ?1 AND sender_pos > ?2
                     ORDER BY sender_pos LIMIT ?3)
                 UNION ALL
                 SELECT {MESSAGE_COLUMNS} FROM (
                     SELECT * FROM messages WHERE receiver_id = ?1 AND receiver_pos > ?2 AND sender_id <> ?1
                     ORDER BY receiver_pos LIMIT ?3)"
            ))?
            .query_map(params![user, after as i64, want], rows::message)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(StreamPage::from_halves(user, messages, limit, head))
    })();
    conn.prepare_cached("COMMIT")?.execute([])?;
    read
}
