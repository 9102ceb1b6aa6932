//! `StateStore` on SQLite: the `cluster_state` table (migration 3). Writes go through the
//! writer thread like every other write; expired rows are purged by writes, at most once
//! per [`PURGE_INTERVAL_MS`].

use confab_sdk::storage::StateEntry;
use rusqlite::{Connection, params};

/// Clock time between two purges of expired rows.
pub(crate) const PURGE_INTERVAL_MS: i64 = 60_000;

pub(crate) enum StateWrite {
    Put {
        kind: String,
        key: String,
        value: String,
        expires_ms: i64,
    },
    Delete {
        kind: String,
        key: String,
    },
}

/// Applies one write; with `purge_before`, also drops every row expired by then.
pub(crate) fn write(conn: &Connection, w: &StateWrite, purge_before: Option<i64>) -> rusqlite::Result<()> {
    if let Some(now) = purge_before {
        conn.prepare_cached("DELETE FROM cluster_state WHERE expires_ms <= ?1")?
            .execute([now])?;
    }
    match w {
        StateWrite::Put {
            kind,
            key,
            value,
            expires_ms,
        } => conn
            .prepare_cached(
                "INSERT INTO cluster_state (kind, key, value, expires_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms",
            )?
            .execute(params![kind, key, value, expires_ms])?,
        StateWrite::Delete { kind, key } => conn
            .prepare_cached("DELETE FROM cluster_state WHERE kind = ?1 AND key = ?2")?
            .execute([kind, key])?,
    };
    Ok(())
}

pub(crate) fn load(conn: &Connection, kind: &str, now_ms: i64) -> rusqlite::Result<Vec<StateEntry>> {
    conn.prepare_cached("SELECT key, value, expires_ms FROM cluster_state WHERE kind = ?1 AND expires_ms > ?2")?
        .query_map(params![kind, now_ms], |row| {
            Ok(StateEntry {
                key: row.get(0)?,
                value: row.get(1)?,
                expires_ms: row.get(2)?,
            })
        })?
        .collect()
}
