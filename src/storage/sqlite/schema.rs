//! Versioned schema migrations, recorded in `PRAGMA user_version`.
//!
//! Entry `i` of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`. Entries are
//! only ever appended: a database written by this build must open in every later one.

use rusqlite::{Connection, TransactionBehavior};

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: users, messages, conversations.
    r#"
    CREATE TABLE users (
        seq            INTEGER PRIMARY KEY,
        id             TEXT    NOT NULL UNIQUE,
        username       TEXT    NOT NULL,
        username_lower TEXT    NOT NULL UNIQUE,
        display_name   TEXT,
        password_hash  TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    );

    -- seq is the rowid: the global order of messages, shared by every node on the file.
    CREATE TABLE messages (
        seq           INTEGER PRIMARY KEY,
        id            TEXT    NOT NULL UNIQUE,
        sender_id     TEXT    NOT NULL,
        receiver_id   TEXT    NOT NULL,
        pair_lo       TEXT    NOT NULL,
        pair_hi       TEXT    NOT NULL,
        body          TEXT    NOT NULL,
        client_msg_id TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX messages_pair     ON messages (pair_lo, pair_hi, seq);
    CREATE INDEX messages_sender   ON messages (sender_id, seq);
    CREATE INDEX messages_receiver ON messages (receiver_id, seq);
    CREATE UNIQUE INDEX messages_client_msg_id
        ON messages (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

    -- One row per (user, partner) that exchanged at least one message.
    CREATE TABLE conversations (
        user_id    TEXT    NOT NULL,
        partner_id TEXT    NOT NULL,
        last_seq   INTEGER NOT NULL,
        last_at    INTEGER NOT NULL,
        unread     INTEGER NOT NULL DEFAULT 0,
        read_seq   INTEGER,
        read_id    TEXT,
        read_at    INTEGER,
        PRIMARY KEY (user_id, partner_id)
    ) WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema up to date. Runs under the write lock, so nodes booting together
/// on one file migrate exactly once.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, String> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
    let latest = latest_version();
    if current > latest {
        return Err(format!(
            "the database schema is version {current}, newer than this build supports ({latest}); upgrade confab"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(|e| format!("migration {}: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    if current < latest {
        tracing::info!(from = current, to = latest, "sqlite schema migrated");
    }
    Ok(latest)
}
