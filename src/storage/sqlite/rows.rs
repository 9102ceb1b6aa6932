//! Row mapping and the small SQL helpers shared by the writer and the readers.

use confab_sdk::storage::{Message, StorageError, UserRecord};
use confab_sdk::time::from_millis;
use rusqlite::{ErrorCode, Row};

/// The message columns every query selects, in the order [`message`] reads them.
pub(crate) const MESSAGE_COLUMNS: &str = "id, sender_id, receiver_id, body, client_msg_id, created_at, updated_at";

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
