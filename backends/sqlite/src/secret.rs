//! The deployment secret of an SQLite deployment: a file beside the database
//! (`confab.db` -> `confab.secret`), owner-only, 256 random bits in hex. Nodes sharing the
//! database share the file; the first to ask creates it, atomically (written under a
//! temporary name, then hard-linked into place, which fails if another node won), so two
//! nodes booting at once agree on one.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use confab_sdk::storage::{StorageError, StorageResult};

/// Where the secret of the database at `db` lives.
pub fn secret_path(db: &Path) -> PathBuf {
    db.with_extension("secret")
}

fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("deployment secret {}: {what}: {e}", path.display()))
}

fn read(path: &Path) -> StorageResult<String> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(path, "cannot read", e))?;
    let secret = text.trim().to_owned();
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail(
            path,
            "unreadable",
            "expected 64 hex digits; delete it to make a new one (tokens signed with it stop working)",
        ));
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the deployment secret is readable by others than its owner: chmod 600 it");
    }
    Ok(secret)
}

/// Reads the secret, creating it first if there is none.
pub fn load_or_create(db: &Path) -> StorageResult<String> {
    let path = secret_path(db);
    // Linked in whole once written, so a file that exists is complete. (Reading first and
    // checking for the file after a failure raced with a node creating it in between.)
    if path.exists() {
        return read(&path);
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension(format!("secret.{}.tmp", confab_sdk::ids::random_token()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&tmp, "cannot write", e));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated the deployment secret");
            Ok(secret)
        }
        // Another node created it first: theirs is the one.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(fail(&path, "cannot create", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_owner_only_and_shared() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("confab.db");
        let first = load_or_create(&db).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(secret_path(&db)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
        assert_eq!(load_or_create(&db).unwrap(), first, "kept");
        // Many creators at once agree on one secret.
        let other = dir.path().join("other.db");
        let all: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| load_or_create(&other).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(all.iter().all(|s| s == &all[0]), "{all:?}");
        assert_ne!(all[0], first, "one secret per database");
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0, "no temporary files left behind");
        std::fs::write(secret_path(&db), "short").unwrap();
        assert!(
            load_or_create(&db).is_err(),
            "a damaged secret is an error, not silently replaced"
        );
    }
}
