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
    -- A message is written to three B-trees only: the table (an append), the id index
    -- (nearly an append: ids start with the time) and the pair index; the fewer random
    -- pages a message dirties, the more of them one commit carries.
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
    CREATE INDEX messages_pair ON messages (pair_lo, pair_hi, seq);
    CREATE UNIQUE INDEX messages_client_msg_id
        ON messages (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

    -- One row per pair that exchanged a message: the newest message, and each side's
    -- read cursor and unread count (lo_* for pair_lo reading pair_hi's messages, hi_*
    -- the reverse). One row per pair means one random page per message, not two.
    CREATE TABLE conversations (
        pair_lo     TEXT    NOT NULL,
        pair_hi     TEXT    NOT NULL,
        last_seq    INTEGER NOT NULL,
        last_at     INTEGER NOT NULL,
        lo_unread   INTEGER NOT NULL DEFAULT 0,
        lo_read_seq INTEGER,
        lo_read_id  TEXT,
        lo_read_at  INTEGER,
        hi_unread   INTEGER NOT NULL DEFAULT 0,
        hi_read_seq INTEGER,
        hi_read_id  TEXT,
        hi_read_at  INTEGER,
        PRIMARY KEY (pair_lo, pair_hi)
    ) WITHOUT ROWID;
    -- The primary key finds a user's pairs where it is pair_lo; this finds the others.
    -- Its key never changes, so new messages never write to it.
    CREATE INDEX conversations_hi ON conversations (pair_hi, pair_lo);
    "#,
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema up to date. Runs under the write lock, so nodes booting together
/// on one file migrate exactly once.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let current: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let latest = latest_version();
    if current > latest {
        return Err(format!(
            "the database schema is version {current}, newer than this build supports ({latest}); upgrade confab"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(|e| format!("migration {}: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    if current < latest {
        tracing::info!(from = current, to = latest, "sqlite schema migrated");
    }
    Ok(latest)
}
