//! In-memory stores for the plugins' tests and benches: the semantics the traits promise,
//! enough for a plugin's logic (the real backends pass the contract suites). Expiry is not
//! modelled.

use std::collections::HashMap;
use std::sync::Mutex;

use confab_sdk::async_trait;
use confab_sdk::cluster::{RefreshGrant, RefreshStore, RevocationStore, Rotation, SessionData, SessionStore};
use confab_sdk::storage::{NewUser, StateEntry, StateStore, StorageError, StorageResult, UserRecord, UserStore};

/// Users by lowercased name; ids are fresh, names unique ignoring case.
#[derive(Default)]
pub struct MemUsers(Mutex<HashMap<String, UserRecord>>);

#[async_trait]
impl UserStore for MemUsers {
    async fn create_user(&self, u: NewUser) -> StorageResult<UserRecord> {
        let mut all = self.0.lock().unwrap();
        let key = u.username.to_lowercase();
        if all.contains_key(&key) {
            return Err(StorageError::Conflict("username taken".into()));
        }
        let rec = UserRecord {
            id: confab_sdk::ids::new_id(0),
            username: u.username,
            display_name: u.display_name,
            password_hash: u.password_hash,
            created_at: Default::default(),
            updated_at: Default::default(),
        };
        all.insert(key, rec.clone());
        Ok(rec)
    }
    async fn user_by_id(&self, id: &str) -> StorageResult<Option<UserRecord>> {
        Ok(self.0.lock().unwrap().values().find(|u| u.id == id).cloned())
    }
    async fn user_by_username(&self, name: &str) -> StorageResult<Option<UserRecord>> {
        Ok(self.0.lock().unwrap().get(&name.to_lowercase()).cloned())
    }
    async fn set_password_hash(&self, id: &str, hash: &str) -> StorageResult<()> {
        let mut all = self.0.lock().unwrap();
        let u = all
            .values_mut()
            .find(|u| u.id == id)
            .ok_or(StorageError::NotFound("user".into()))?;
        u.password_hash = hash.to_owned();
        Ok(())
    }
    async fn deployment_secret(&self) -> StorageResult<String> {
        Ok("ab".repeat(32))
    }
}

/// Sessions that never expire.
#[derive(Default)]
pub struct MemSessions(Mutex<HashMap<String, SessionData>>);

#[async_trait]
impl SessionStore for MemSessions {
    async fn create(&self, data: SessionData, _: u64, _: u64) -> StorageResult<String> {
        let id = confab_sdk::ids::random_token();
        self.0.lock().unwrap().insert(id.clone(), data);
        Ok(id)
    }
    async fn get(&self, id: &str) -> StorageResult<Option<SessionData>> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }
    async fn delete(&self, id: &str) -> StorageResult<()> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
}

/// Revocations kept forever.
#[derive(Default)]
pub struct MemRevocations(Mutex<HashMap<String, i64>>);

impl MemRevocations {
    /// Until when `jti` was revoked (unix seconds), if it was.
    pub fn until(&self, jti: &str) -> Option<i64> {
        self.0.lock().unwrap().get(jti).copied()
    }
}

#[async_trait]
impl RevocationStore for MemRevocations {
    async fn revoke(&self, jti: &str, until: i64) -> StorageResult<()> {
        self.0.lock().unwrap().insert(jti.to_owned(), until);
        Ok(())
    }
    async fn is_revoked(&self, jti: &str) -> StorageResult<bool> {
        Ok(self.0.lock().unwrap().contains_key(jti))
    }
}

/// Issues refresh families; a rotation is always refused (`Invalid`).
pub struct MemRefresh;

#[async_trait]
impl RefreshStore for MemRefresh {
    async fn issue(&self, user_id: &str, username: &str, _: u64) -> StorageResult<(String, RefreshGrant)> {
        let family = confab_sdk::ids::random_token();
        let grant = RefreshGrant {
            family: family.clone(),
            user_id: user_id.into(),
            username: username.into(),
        };
        Ok((confab_sdk::cluster::new_refresh_token(&family), grant))
    }
    async fn rotate(&self, _: &str, _: u64) -> StorageResult<Rotation> {
        Ok(Rotation::Invalid)
    }
    async fn revoke_family(&self, _: &str) -> StorageResult<()> {
        Ok(())
    }
}

/// Records by (kind, key), with their expiry.
#[derive(Default)]
pub struct MemState(Mutex<HashMap<(String, String), (String, i64)>>);

#[async_trait]
impl StateStore for MemState {
    async fn put_state(&self, kind: &str, key: &str, value: &str, expires_ms: i64) -> StorageResult<()> {
        let mut all = self.0.lock().unwrap();
        all.insert((kind.into(), key.into()), (value.into(), expires_ms));
        Ok(())
    }
    async fn delete_state(&self, kind: &str, key: &str) -> StorageResult<()> {
        self.0.lock().unwrap().remove(&(kind.to_owned(), key.to_owned()));
        Ok(())
    }
    async fn load_state(&self, kind: &str, now_ms: i64) -> StorageResult<Vec<StateEntry>> {
        let all = self.0.lock().unwrap();
        Ok(all
            .iter()
            .filter(|((k, _), (_, exp))| k == kind && *exp > now_ms)
            .map(|((_, key), (value, expires_ms))| StateEntry {
                key: key.clone(),
                value: value.clone(),
                expires_ms: *expires_ms,
            })
            .collect())
    }
}
