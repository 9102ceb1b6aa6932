//! Refresh tokens in process memory, for a single node (`cluster.backend = "local"`).
//! Families expire with their absolute lifetime; spent tokens are remembered until then
//! (a replay must be recognised), their successor only for the grace. With [`Persist`]
//! every family is also kept in the storage (one record per family, written before the
//! answer), so a restart neither revives a spent token nor forgets a login.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{RefreshGrant, RefreshStore, Rotation, new_refresh_token, refresh_parts};
use confab_sdk::ids::random_token;
use confab_sdk::storage::{SharedStateStore, StorageResult};
use serde::{Deserialize, Serialize};

use crate::persist::{self, Persist};

#[derive(Clone, Serialize, Deserialize)]
struct Family {
    user_id: String,
    username: String,
    expires_ms: i64,
    revoked: bool,
    /// Secret hash -> the spending of that token, if spent.
    tokens: HashMap<String, Option<Spent>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Spent {
    next: String,
    until_ms: i64,
}

impl Family {
    fn grant(&self, family: &str) -> RefreshGrant {
        RefreshGrant {
            family: family.to_owned(),
            user_id: self.user_id.clone(),
            username: self.username.clone(),
        }
    }
}

pub struct LocalRefreshStore {
    clock: SharedClock,
    families: Mutex<HashMap<String, Family>>,
    persist: Option<Persist>,
}

impl LocalRefreshStore {
    pub fn new(clock: SharedClock) -> Self {
        LocalRefreshStore {
            clock,
            families: Mutex::default(),
            persist: None,
        }
    }

    /// A store kept in `state`, holding the live families `state` already has.
    pub async fn restore(clock: SharedClock, state: SharedStateStore) -> StorageResult<Self> {
        let persist = Persist::new(state, "refresh");
        let families = persist.load::<Family>(clock.now_millis()).await?;
        Ok(LocalRefreshStore {
            clock,
            families: Mutex::new(families.into_iter().collect()),
            persist: Some(persist),
        })
    }

    fn families(&self) -> MutexGuard<'_, HashMap<String, Family>> {
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `f` (if persisted), then makes it the family's state in memory.
    async fn save(&self, id: &str, f: Family) -> StorageResult<()> {
        if let Some(p) = &self.persist {
            p.put(id, &f, f.expires_ms).await?;
        }
        self.families().insert(id.to_owned(), f);
        Ok(())
    }
}

#[async_trait]
impl RefreshStore for LocalRefreshStore {
    async fn issue(&self, user_id: &str, username: &str, ttl_secs: u64) -> StorageResult<(String, RefreshGrant)> {
        let _order = persist::order(&self.persist).await;
        let now = self.clock.now_millis();
        let id = random_token();
        let token = new_refresh_token(&id);
        let (_, hash) = refresh_parts(&token).expect("a fresh token is well formed");
        let family = Family {
            user_id: user_id.to_owned(),
            username: username.to_owned(),
            expires_ms: now.saturating_add((ttl_secs as i64).saturating_mul(1000)),
            revoked: false,
            tokens: HashMap::from([(hash, None)]),
        };
        let grant = family.grant(&id);
        // Bounded: expired families go whenever one is added (the storage purges its own).
        self.families().retain(|_, f| f.expires_ms > now);
        self.save(&id, family).await?;
        Ok((token, grant))
    }

    async fn rotate(&self, token: &str, grace_secs: u64) -> StorageResult<Rotation> {
        let Some((id, hash)) = refresh_parts(token) else {
            return Ok(Rotation::Invalid);
        };
        let _order = persist::order(&self.persist).await;
        let now = self.clock.now_millis();
        let Some(mut f) = self
            .families()
            .get(id)
            .filter(|f| !f.revoked && f.expires_ms > now)
            .cloned()
        else {
            return Ok(Rotation::Invalid);
        };
        let grant = f.grant(id);
        match f.tokens.get(&hash) {
            None => Ok(Rotation::Invalid),
            Some(None) => {
                let next = new_refresh_token(id);
                let until_ms = now.saturating_add((grace_secs.max(1) as i64).saturating_mul(1000));
                let (_, next_hash) = refresh_parts(&next).expect("a fresh token is well formed");
                f.tokens.insert(
                    hash,
                    Some(Spent {
                        next: next.clone(),
                        until_ms,
                    }),
                );
                f.tokens.insert(next_hash, None);
                self.save(id, f).await?;
                Ok(Rotation::Rotated { next, grant })
            }
            Some(Some(s)) if now < s.until_ms => Ok(Rotation::Rotated {
                next: s.next.clone(),
                grant,
            }),
            Some(Some(_)) => {
                f.revoked = true;
                self.save(id, f).await?;
                Ok(Rotation::Reused {
                    family: id.to_owned(),
                    user_id: grant.user_id,
                })
            }
        }
    }

    async fn revoke_family(&self, family: &str) -> StorageResult<()> {
        let _order = persist::order(&self.persist).await;
        let Some(mut f) = self.families().get(family).cloned() else {
            return Ok(());
        };
        f.revoked = true;
        self.save(family, f).await
    }
}
