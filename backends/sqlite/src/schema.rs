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
    // 2: a message no longer updates its conversation row (a random page per message,
    // a third of each commit's pages). The newest message and the unread counts are read
    // from messages_pair instead, which now also tells which side a message went to, so
    // counting unread messages never leaves the index. Conversation rows keep the pair
    // and the read cursors: written when a pair first talks and on mark_read.
    r#"
    ALTER TABLE messages ADD COLUMN to_lo INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET to_lo = 1 WHERE receiver_id = pair_lo;
    DROP INDEX messages_pair;
    CREATE INDEX messages_pair ON messages (pair_lo, pair_hi, seq, to_lo);
    ALTER TABLE conversations DROP COLUMN last_seq;
    ALTER TABLE conversations DROP COLUMN last_at;
    ALTER TABLE conversations DROP COLUMN lo_unread;
    ALTER TABLE conversations DROP COLUMN hi_unread;
    "#,
    // 3: small records with an expiry for the in-process cluster backend (sessions,
    // revoked tokens, refresh families), so that a restart of a single node keeps them.
    r#"
    CREATE TABLE cluster_state (
        kind       TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        value      TEXT    NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    CREATE INDEX cluster_state_expiry ON cluster_state (expires_ms);
    "#,
    // 4: per-user streams (streams.rs): each message's position in its sender's and its
    // receiver's stream, given to the stored messages in their stored (seq) order.
    r#"
    ALTER TABLE messages ADD COLUMN sender_pos INTEGER;
    ALTER TABLE messages ADD COLUMN receiver_pos INTEGER;
    CREATE TEMP TABLE stream_backfill AS
        SELECT seq, user_id, row_number() OVER (PARTITION BY user_id ORDER BY seq) AS pos
        FROM (SELECT seq, sender_id AS user_id FROM messages
              UNION SELECT seq, receiver_id FROM messages);
    CREATE INDEX temp.stream_backfill_seq ON stream_backfill (seq, user_id);
    UPDATE messages SET sender_pos = b.pos FROM stream_backfill b
        WHERE b.seq = messages.seq AND b.user_id = messages.sender_id;
    UPDATE messages SET receiver_pos = b.pos FROM stream_backfill b
        WHERE b.seq = messages.seq AND b.user_id = messages.receiver_id;
    DROP TABLE stream_backfill;
    CREATE INDEX messages_sender_pos ON messages (sender_id, sender_pos);
    CREATE INDEX messages_receiver_pos ON messages (receiver_id, receiver_pos);
    "#,
    // 5: streams without user-keyed indexes (streams.rs): they cost each message two
    // random pages per commit. A user's messages are found through their conversations;
    // the seq of every 64th position (streams::MARK_EVERY) bounds where a page starts.
    r#"
    DROP INDEX messages_sender_pos;
    DROP INDEX messages_receiver_pos;
    CREATE TABLE stream_marks (
        user_id TEXT    NOT NULL,
        pos     INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        PRIMARY KEY (user_id, pos)
    ) WITHOUT ROWID;
    INSERT INTO stream_marks (user_id, pos, seq)
        SELECT sender_id, sender_pos, seq FROM messages WHERE sender_pos % 64 = 0;
    INSERT OR IGNORE INTO stream_marks (user_id, pos, seq)
        SELECT receiver_id, receiver_pos, seq FROM messages WHERE receiver_pos % 64 = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader;

    /// A file written at version 1 (conversation rows carrying the newest message and
    /// unread counts) reads the same after migration 2 derives both from the messages.
    #[test]
    fn migration_2_keeps_conversations_and_unread_counts() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("version 1");
        conn.pragma_update(None, "user_version", 1).expect("user_version");
        let (a, b) = ("aaaaaaaaaaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbbbbbbbbbb2");
        conn.execute_batch(&format!(
            "INSERT INTO messages (seq, id, sender_id, receiver_id, pair_lo, pair_hi, body, created_at, updated_at)
             VALUES (1, 'm1', '{a}', '{b}', '{a}', '{b}', 'hi b', 10, 10),
                    (2, 'm2', '{b}', '{a}', '{a}', '{b}', 'hi a', 20, 20),
                    (3, 'm3', '{a}', '{b}', '{a}', '{b}', 'again', 30, 30),
                    (4, 'm4', '{a}', '{a}', '{a}', '{a}', 'note to self', 40, 40);
             -- b has read m1: one unread (m3); a has read nothing: one unread (m2).
             INSERT INTO conversations (pair_lo, pair_hi, last_seq, last_at, lo_unread, hi_unread,
                                        hi_read_seq, hi_read_id, hi_read_at)
             VALUES ('{a}', '{b}', 3, 30, 1, 1, 1, 'm1', 15);
             INSERT INTO conversations (pair_lo, pair_hi, last_seq, last_at, lo_unread)
             VALUES ('{a}', '{a}', 4, 40, 1);"
        ))
        .expect("version 1 rows");
        assert_eq!(migrate(&mut conn), Ok(latest_version()));
        let to_lo: Vec<bool> = conn
            .prepare("SELECT to_lo FROM messages ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("to_lo");
        assert_eq!(to_lo, [false, true, false, true]);
        let seen = |user: &str| -> Vec<(String, String, u64)> {
            reader::conversations(&conn, user, None, 1000)
                .expect("conversations")
                .into_iter()
                .map(|c| (c.partner, c.last_message.id, c.unread))
                .collect()
        };
        assert_eq!(
            seen(a),
            [(a.to_owned(), "m4".to_owned(), 1), (b.to_owned(), "m3".to_owned(), 1)]
        );
        assert_eq!(seen(b), [(a.to_owned(), "m3".to_owned(), 1)]);
    }

    /// Stored messages keep their stream positions through migration 5, which replaces
    /// the user-keyed indexes by marks: heads and pages read the same as before.
    #[test]
    fn migration_5_marks_every_stored_stream() {
        use crate::streams::{self, MARK_EVERY};
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).expect("versions 1-4");
        }
        conn.pragma_update(None, "user_version", 4).expect("user_version");
        let (a, b) = ("aaaaaaaaaaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbbbbbbbbbb2");
        conn.execute_batch(&format!(
            "INSERT INTO conversations (pair_lo, pair_hi) VALUES ('{a}', '{b}'), ('{a}', '{a}');"
        ))
        .expect("conversations");
        // a writes to b 150 times and to itself every eleventh time.
        let (mut pa, mut pb) = (0i64, 0i64);
        for seq in 1..=165i64 {
            let to = if seq % 11 == 0 { a } else { b };
            pa += 1;
            let rp = if to == a {
                pa
            } else {
                pb += 1;
                pb
            };
            conn.execute(
                "INSERT INTO messages (seq, id, sender_id, receiver_id, pair_lo, pair_hi, to_lo, body,
                                       created_at, updated_at, sender_pos, receiver_pos)
                 VALUES (?1, printf('m%023d', ?1), ?2, ?3, ?2, ?3, ?4, 'x', ?1, ?1, ?5, ?6)",
                rusqlite::params![seq, a, to, to == a, pa, rp],
            )
            .expect("message");
        }
        assert_eq!(migrate(&mut conn), Ok(latest_version()));
        assert_eq!(streams::head(&conn, a).expect("head"), pa as u64);
        assert_eq!(streams::head(&conn, b).expect("head"), pb as u64);
        let marks: i64 = conn
            .query_row("SELECT count(*) FROM stream_marks", [], |r| r.get(0))
            .expect("marks");
        assert_eq!(marks as u64, pa as u64 / MARK_EVERY + pb as u64 / MARK_EVERY);
        for user in [a, b] {
            let mut after = 0;
            loop {
                let p = streams::page(&conn, user, after, 50).expect("page");
                for m in &p.messages {
                    assert_eq!(m.pos_for(user), Some(after + 1), "{user} after {after}");
                    after += 1;
                }
                if !p.has_more {
                    assert_eq!(after, p.head_pos);
                    break;
                }
            }
        }
    }
}
