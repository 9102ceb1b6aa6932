//! Which storage backend the black-box servers run on: `CONFAB_TEST_STORAGE=sqlite` (the
//! default) or `mongodb` (on the server in `CONFAB_TEST_MONGO_URI`, which tests/run.sh
//! starts). The same tests run on both; the few about SQLite itself ask `sqlite_only`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

pub const STORAGE_VAR: &str = "CONFAB_TEST_STORAGE";
pub const MONGO_URI_VAR: &str = "CONFAB_TEST_MONGO_URI";
pub const MONGO_STANDALONE_VAR: &str = "CONFAB_TEST_MONGO_STANDALONE_URI";

/// True when the servers run on MongoDB.
pub fn on_mongo() -> bool {
    match std::env::var(STORAGE_VAR).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("mongodb") => true,
        Ok(other) => panic!("{STORAGE_VAR}={other}: expected sqlite or mongodb"),
    }
}

/// The MongoDB server the black-box servers use, when they run on MongoDB.
pub fn mongo_servers() -> Option<String> {
    if !on_mongo() {
        return None;
    }
    match std::env::var(MONGO_URI_VAR) {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ => panic!("{STORAGE_VAR}=mongodb needs {MONGO_URI_VAR} (tests/run.sh starts a server)"),
    }
}

/// One database per SQLite path: servers that would share a file share a database.
pub fn database_for(sqlite: &Path) -> String {
    let mut h = DefaultHasher::new();
    sqlite.hash(&mut h);
    format!("confab_t_{:016x}", h.finish())
}

/// Prints `skipped: <why>` where a reader of the test command sees it.
pub fn skip(why: &str) {
    super::note(&format!("skipped: {why}"));
}

/// False (with a `skipped:` line) when the servers run on MongoDB: for tests about the
/// SQLite file itself.
pub fn sqlite_only(test: &str) -> bool {
    if on_mongo() {
        skip(&format!(
            "{test}: about the SQLite backend, not run with {STORAGE_VAR}=mongodb"
        ));
        return false;
    }
    true
}
