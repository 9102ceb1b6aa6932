//! Row mapping and the small SQL helpers shared by the writer and the readers.

use confab_sdk::storage::{Message, StorageError, UserRecord};
use confab_sdk::time::from_millis;
use rusqlite::{Connection, ErrorCode, Row, params};

/// The message columns every query selects, in the order [`message`] reads them.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, sender_id, receiver_id, body, client_msg_id, created_at, updated_at, sender_pos, receiver_pos";

pub(crate) const USER_COLUMNS: &str = "id, username, display_name, password_hash, created_at, updated_at";

pub(crate) fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    message_at(row, 0)
}

/// Reads the message columns starting at column `at` (joins put other columns first).
pub(crate) fn message_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(at)?,
        sender_id: row.get(at + 1)?,
        receiver_id: row.get(at + 2)?,
        message: row.get(at + 3)?,
        client_msg_id: row.get(at + 4)?,
        created_at: from_millis(row.get(at + 5)?),
        updated_at: from_millis(row.get(at + 6)?),
        pos: None,
        positions: match (row.get::<_, Option<i64>>(at + 7)?, row.get::<_, Option<i64>>(at + 8)?) {
            (Some(s), Some(r)) => Some((s as u64, r as u64)),
            _ => None,
        },
    })
}

pub(crate) fn user(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        password_hash: row.get(3)?,
        created_at: from_millis(row.get(4)?),
        updated_at: from_millis(row.get(5)?),
    })
}

/// The pair key: the two user ids, smaller first, so both directions share one range.
pub(crate) fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// The column prefix of `user`'s half of the conversation row of (user, partner).
pub(crate) fn side(user: &str, partner: &str) -> &'static str {
    if user <= partner { "lo" } else { "hi" }
}

/// Another connection (another node) holds the lock longer than the busy timeout.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub(crate) fn backend(e: rusqlite::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// Unread counts look at no more than this many messages after the read cursor: counting
/// walks one index entry per message (both sides'), and a conversation that is never
/// marked read would otherwise cost more on every listing.
pub(crate) const UNREAD_SCAN_CAP: i64 = 10_000;

/// The messages of pair `(lo, hi)` after `after_seq` that went to the `lo` side (`to_lo`)
/// or the `hi` side, among the newest [`UNREAD_SCAN_CAP`] after it; index-only, on
/// messages_pair. Exact whenever fewer messages than the cap follow the cursor.
pub(crate) fn unread(conn: &Connection, lo: &str, hi: &str, after_seq: i64, to_lo: bool) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM (SELECT to_lo FROM messages
                               WHERE pair_lo = ?1 AND pair_hi = ?2 AND seq > ?3
                               ORDER BY seq DESC LIMIT ?5)
         WHERE to_lo = ?4",
    )?
    .query_row(params![lo, hi, after_seq, to_lo, UNREAD_SCAN_CAP], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_counts_one_side_after_the_cursor_within_the_scan_cap() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::schema::migrate(&mut conn).expect("schema");
        let total = UNREAD_SCAN_CAP + 5;
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO messages (seq, id, sender_id, receiver_id, pair_lo, pair_hi, to_lo, body, created_at, updated_at)
             SELECT i, 'm' || i, 'a', 'b', 'a', 'b', 0, 'x', i, i FROM n",
            [total],
        )
        .expect("messages to b");
        conn.execute(
            "INSERT INTO messages (seq, id, sender_id, receiver_id, pair_lo, pair_hi, to_lo, body, created_at, updated_at)
             VALUES (?1, 'to-a', 'b', 'a', 'a', 'b', 1, 'y', 0, 0)",
            [total + 1],
        )
        .expect("a message to a");
        assert_eq!(unread(&conn, "a", "b", 0, true), Ok(1), "the other side");
        assert_eq!(
            unread(&conn, "a", "b", 10, false),
            Ok(total - 10),
            "exact under the cap"
        );
        assert_eq!(
            unread(&conn, "a", "b", 0, false),
            Ok(UNREAD_SCAN_CAP - 1),
            "only the newest messages after the cursor are looked at"
        );
        assert_eq!(unread(&conn, "a", "b", total + 1, true), Ok(0));
    }
}
