//! Refresh tokens in process memory, for a single node (`cluster.backend = "local"`).
//! Families expire with their absolute lifetime; spent tokens are remembered until then
//! (a replay must be recognised), their successor only for the grace.

use std::collections::HashMap;
use std::sync::Mutex;

use confab_sdk::async_trait;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{RefreshGrant, RefreshStore, Rotation, new_refresh_token, refresh_parts};
use confab_sdk::ids::random_token;
use confab_sdk::storage::StorageResult;

struct Family {
    grant: RefreshGrant,
    expires_ms: i64,
    revoked: bool,
    /// Secret hash -> the spending of that token, if spent.
    tokens: HashMap<String, Option<Spent>>,
}

struct Spent {
    next: String,
    until_ms: i64,
}

pub struct LocalRefreshStore {
    clock: SharedClock,
    families: Mutex<HashMap<String, Family>>,
}

impl LocalRefreshStore {
    pub fn new(clock: SharedClock) -> Self {
        LocalRefreshStore {
            clock,
            families: Mutex::default(),
        }
    }
}

#[async_trait]
impl RefreshStore for LocalRefreshStore {
    async fn issue(&self, user_id: &str, username: &str, ttl_secs: u64) -> StorageResult<(String, RefreshGrant)> {
        let now = self.clock.now_millis();
        let family = random_token();
        let token = new_refresh_token(&family);
        let (_, hash) = refresh_parts(&token).expect("a fresh token is well formed");
        let grant = RefreshGrant {
            family: family.clone(),
            user_id: user_id.to_owned(),
            username: username.to_owned(),
        };
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: expired families go whenever one is added.
        families.retain(|_, f| f.expires_ms > now);
        families.insert(
            family,
            Family {
                grant: grant.clone(),
                expires_ms: now.saturating_add((ttl_secs as i64).saturating_mul(1000)),
                revoked: false,
                tokens: HashMap::from([(hash, None)]),
            },
        );
        Ok((token, grant))
    }

    async fn rotate(&self, token: &str, grace_secs: u64) -> StorageResult<Rotation> {
        let Some((family, hash)) = refresh_parts(token) else {
            return Ok(Rotation::Invalid);
        };
        let now = self.clock.now_millis();
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = families.get_mut(family).filter(|f| !f.revoked && f.expires_ms > now) else {
            return Ok(Rotation::Invalid);
        };
        let grant = f.grant.clone();
        match f.tokens.get_mut(&hash) {
            None => Ok(Rotation::Invalid),
            Some(spent @ None) => {
                let next = new_refresh_token(family);
                *spent = Some(Spent {
                    next: next.clone(),
                    until_ms: now.saturating_add((grace_secs.max(1) as i64).saturating_mul(1000)),
                });
                let (_, next_hash) = refresh_parts(&next).expect("a fresh token is well formed");
                f.tokens.insert(next_hash, None);
                Ok(Rotation::Rotated { next, grant })
            }
            Some(Some(s)) if now < s.until_ms => Ok(Rotation::Rotated {
                next: s.next.clone(),
                grant,
            }),
            Some(Some(_)) => {
                f.revoked = true;
                Ok(Rotation::Reused {
                    family: family.to_owned(),
                })
            }
        }
    }

    async fn revoke_family(&self, family: &str) -> StorageResult<()> {
        if let Some(f) = self.families.lock().unwrap_or_else(|e| e.into_inner()).get_mut(family) {
            f.revoked = true;
        }
        Ok(())
    }
}
