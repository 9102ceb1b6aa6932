//! The auth service: accounts, sessions, tokens, and the [`Authenticator`] other plugins use.

use confab_sdk::auth::{Authenticator, CredentialId, Principal, ended};
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{Rotation, SessionData, SharedRefreshStore, SharedRevocationStore, SharedSessionStore};
use confab_sdk::http::{CookieOrigins, bearer_token, cookie};
use confab_sdk::realtime::SharedEmitter;
use confab_sdk::salvo::http::HeaderMap;
use confab_sdk::storage::{NewUser, PublicUser, SharedUserStore, StorageError, UserRecord};
use confab_sdk::{ApiError, async_trait};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::AuthConfig;
use crate::cookie::{CookieSettings, is_session_id};
use crate::password::{Hasher, Verdict};
use crate::tokens::{TokenService, TokenSettings};
use crate::validate;

/// The same answer for an unknown user and a wrong password, so neither can be told apart.
pub const BAD_CREDENTIALS: &str = "invalid username or password";
pub const NO_CREDENTIALS: &str = "authentication required";
pub const REVOKED: &str = "token revoked";
pub const BAD_SESSION: &str = "session expired or invalid";

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 3-32 characters: letters, digits, `_`, `.`, `-`. Unique regardless of case.
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9_.-]{3,32}$",
        example = "alice"
    )]
    pub username: String,
    /// At least `auth.password.min_length` characters (default 8), at most
    /// `auth.password.max_bytes` bytes (default 256).
    #[schema(min_length = 8, max_length = 256, example = "correct horse battery")]
    pub password: String,
    /// Optional; trimmed, 1-64 characters.
    #[serde(rename = "displayName", default)]
    #[schema(min_length = 1, max_length = 64, example = "Alice")]
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(min_length = 1, example = "alice")]
    pub username: String,
    #[schema(min_length = 1, max_length = 256, example = "correct horse battery")]
    pub password: String,
}

/// A fresh token and the user it was issued to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    /// JWT (HS256) for `Authorization: Bearer` or the Socket.IO handshake's `auth.token`.
    pub token: String,
    /// Opaque; `POST /auth/refresh` trades it for a new pair, once (it rotates).
    #[serde(rename = "refreshToken")]
    pub refresh_token: String,
    pub user: PublicUser,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token of the last answer of register, login or refresh.
    #[serde(rename = "refreshToken")]
    #[schema(min_length = 1, max_length = 256)]
    pub refresh_token: String,
}

pub const BAD_REFRESH: &str = "invalid or expired refresh token";
pub const REUSED_REFRESH: &str = "refresh token already used: the login is revoked, log in again";

/// What register and login produce: the body and the new session's id for the cookie.
pub struct SignedIn {
    pub body: AuthResponse,
    pub session_id: String,
}

pub struct AuthService {
    users: SharedUserStore,
    sessions: SharedSessionStore,
    revocations: SharedRevocationStore,
    refresh: SharedRefreshStore,
    refresh_ttl_secs: u64,
    refresh_grace_secs: u64,
    tokens: TokenService,
    hasher: Hasher,
    pub cookie: CookieSettings,
    session_absolute_secs: u64,
    session_idle_secs: u64,
    password_min_chars: usize,
    password_max_bytes: usize,
    /// Ends the sockets of a credential that ended (absent in unit tests).
    emitter: Option<SharedEmitter>,
    /// Browser origins besides the server's own that may use the cookie.
    cookie_origins: CookieOrigins,
}

pub struct Stores {
    pub users: SharedUserStore,
    pub sessions: SharedSessionStore,
    pub revocations: SharedRevocationStore,
    pub refresh: SharedRefreshStore,
    pub clock: SharedClock,
}

impl AuthService {
    /// Ends the password hashing threads (at shutdown, once requests are done).
    pub async fn shutdown(&self) {
        self.hasher.shutdown().await;
    }

    /// `secure_cookie`: the profile's say on top of `auth.session.secure`.
    /// `generated`: the deployment secret, which signs when no secret is configured.
    pub fn new(
        config: &AuthConfig,
        stores: Stores,
        secure_cookie: bool,
        generated: Option<&str>,
    ) -> Result<Self, String> {
        let tokens = TokenService::new(
            TokenSettings {
                keys: config.effective_keys(generated),
                ttl_secs: config.jwt.ttl_secs,
                leeway_secs: config.jwt.leeway_secs,
                issuer: config.jwt.issuer.clone(),
                audience: config.jwt.audience.clone(),
            },
            stores.clock,
        )?;
        Ok(AuthService {
            users: stores.users,
            sessions: stores.sessions,
            revocations: stores.revocations,
            refresh: stores.refresh,
            refresh_ttl_secs: config.refresh.ttl_secs,
            refresh_grace_secs: config.refresh.grace_secs,
            tokens,
            hasher: Hasher::new(&config.password)?,
            cookie: CookieSettings {
                name: config.session.cookie_name.clone(),
                max_age_secs: config.session.absolute_secs,
                secure: secure_cookie || config.session.secure,
            },
            session_absolute_secs: config.session.absolute_secs,
            session_idle_secs: config.session.idle_secs,
            password_min_chars: config.password.min_length,
            password_max_bytes: config.password.max_bytes,
            emitter: None,
            cookie_origins: CookieOrigins::default(),
        })
    }

    /// The origins, besides the server's own, whose requests may use the cookie.
    pub fn with_cookie_origins(mut self, origins: CookieOrigins) -> Self {
        self.cookie_origins = origins;
        self
    }

    /// Lets logout end the sockets of the credentials it ends.
    pub fn with_emitter(mut self, emitter: SharedEmitter) -> Self {
        self.emitter = Some(emitter);
        self
    }

    pub async fn register(&self, req: RegisterRequest) -> Result<SignedIn, ApiError> {
        validate::username(&req.username)?;
        validate::password(&req.password, self.password_min_chars, self.password_max_bytes)?;
        let display_name = validate::display_name(req.display_name.as_deref())?;
        // Refuse a taken name before paying for a hash; the store still decides races.
        if self.users.user_by_username(&req.username).await?.is_some() {
            return Err(taken());
        }
        let password_hash = self.hasher.hash(req.password).await?;
        let user = self
            .users
            .create_user(NewUser {
                username: req.username,
                display_name,
                password_hash,
            })
            .await
            .map_err(|e| match e {
                StorageError::Conflict(_) => taken(),
                other => other.into(),
            })?;
        self.sign_in(&user).await
    }

    pub async fn login(&self, req: LoginRequest) -> Result<SignedIn, ApiError> {
        validate::login(&req.username, &req.password, self.password_max_bytes)?;
        let user = if req.username.len() <= validate::LOGIN_USERNAME_MAX_BYTES {
            self.users.user_by_username(&req.username).await?
        } else {
            None
        };
        // Unknown users are checked against a dummy hash: same work, same answer.
        let verdict = self
            .hasher
            .verify(req.password.clone(), user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let (Some(user), Verdict::Match { rehash }) = (user, verdict) else {
            return Err(ApiError::unauthorized(BAD_CREDENTIALS));
        };
        if rehash {
            self.upgrade_hash(&user, req.password).await;
        }
        self.sign_in(&user).await
    }

    /// Replaces an old-parameter or bcrypt hash. A failure only delays the upgrade to the
    /// next login, so it is logged rather than failing this one.
    async fn upgrade_hash(&self, user: &UserRecord, password: String) {
        let result = match self.hasher.hash(password).await {
            Ok(hash) => self
                .users
                .set_password_hash(&user.id, &hash)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                tracing::info!(user_id = %user.id, "password hash upgraded to current argon2id parameters")
            }
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade failed")
            }
        }
    }

    async fn sign_in(&self, user: &UserRecord) -> Result<SignedIn, ApiError> {
        let (refresh_token, grant) = self
            .refresh
            .issue(&user.id, &user.username, self.refresh_ttl_secs)
            .await?;
        let issued = self.tokens.issue(&user.id, &user.username, Some(&grant.family))?;
        let data = SessionData {
            user_id: user.id.clone(),
            username: user.username.clone(),
            // A cookie logout revokes the token of the same login too.
            token: Some((
                issued.claims.jti.clone(),
                issued.claims.exp.saturating_add(self.tokens.leeway_secs()),
            )),
            family: Some(grant.family.clone()),
        };
        let session_id = self
            .sessions
            .create(data, self.session_absolute_secs, self.session_idle_secs)
            .await?;
        Ok(SignedIn {
            body: AuthResponse {
                token: issued.token,
                refresh_token,
                user: PublicUser::from(user),
            },
            session_id,
        })
    }

    /// The current user record of an authenticated caller.
    pub async fn me(&self, principal: &Principal) -> Result<PublicUser, ApiError> {
        match self.users.user_by_id(principal.user_id()).await? {
            Some(u) => Ok(PublicUser::from(&u)),
            None => Err(ApiError::unauthorized("the account no longer exists")),
        }
    }

    /// Ends what the request presented: the Bearer token is revoked until it would have
    /// expired, the cookie's session is deleted. Refused if nothing valid was presented.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let caller = self.authenticate(headers).await?;
        if let Some(token) = bearer_token(headers)
            && let Ok(claims) = self.tokens.verify(token)
        {
            // Accepted until exp + leeway, so remembered that long.
            self.revocations
                .revoke(&claims.jti, claims.exp.saturating_add(self.tokens.leeway_secs()))
                .await?;
            // Before the family's writes, which may fail: the token is refused already, so
            // its sockets end now, with its login's (`CredentialId::token`).
            self.end_sockets(&claims.sub, &CredentialId::token(&claims.jti, claims.fam.as_deref()))
                .await;
            // The login it came from ends with it: its refresh tokens and their tokens.
            if let Some(family) = &claims.fam {
                self.revoke_family_records(family).await?;
            }
        }
        if let Some(id) = cookie(headers, &self.cookie.name).filter(|id| is_session_id(id)) {
            let login = self.sessions.get(id).await?;
            if let Some(login) = &login {
                if let Some((jti, until)) = &login.token {
                    self.revocations.revoke(jti, *until).await?;
                    let credential = CredentialId::token(jti, login.family.as_deref());
                    self.end_sockets(&login.user_id, &credential).await;
                }
                match (&login.family, &login.token) {
                    // Its sockets ended with the token's, just above.
                    (Some(family), Some(_)) => self.revoke_family_records(family).await?,
                    (Some(family), None) => {
                        self.revoke_family(family, &login.user_id, ended::LOGGED_OUT, "logged out")
                            .await?
                    }
                    (None, _) => {}
                }
            }
            self.sessions.delete(id).await?;
            // A session already gone (expired; the request passed by its Bearer token) may
            // still have sockets: they are the caller's if any.
            let user_id = login.as_ref().map_or(caller.user_id(), |l| l.user_id.as_str());
            self.end_sockets(user_id, &CredentialId::Session(id.to_owned())).await;
        }
        Ok(())
    }

    /// `POST /auth/refresh`: a new pair for a live refresh token, which is spent. A spent
    /// one presented again after the grace revokes its family: its access tokens, its
    /// refresh tokens, and the sockets they opened.
    pub async fn refresh(&self, req: RefreshRequest) -> Result<AuthResponse, ApiError> {
        let token = req.refresh_token.trim();
        if token.is_empty() || token.len() > 256 {
            return Err(ApiError::validation(
                "refreshToken",
                "refreshToken: expected the refresh token",
            ));
        }
        match self.refresh.rotate(token, self.refresh_grace_secs).await? {
            Rotation::Rotated { next, grant } => {
                let Some(user) = self.users.user_by_id(&grant.user_id).await? else {
                    return Err(ApiError::unauthorized("the account no longer exists"));
                };
                let issued = self.tokens.issue(&user.id, &user.username, Some(&grant.family))?;
                Ok(AuthResponse {
                    token: issued.token,
                    refresh_token: next,
                    user: PublicUser::from(&user),
                })
            }
            Rotation::Reused { family, user_id } => {
                tracing::warn!(family = %family, "a spent refresh token was presented again: revoking its login");
                self.revoke_family(
                    &family,
                    &user_id,
                    ended::REVOKED,
                    "the login was revoked: a refresh token was reused",
                )
                .await?;
                Err(ApiError::unauthorized(REUSED_REFRESH))
            }
            Rotation::Invalid => Err(ApiError::unauthorized(BAD_REFRESH)),
        }
    }

    /// Ends a login's refresh family: no more refreshes, its access tokens refused (for as
    /// long as any of them could live), its sockets (all `user_id`'s) ended.
    async fn revoke_family(&self, family: &str, user_id: &str, code: &str, message: &str) -> Result<(), ApiError> {
        self.revoke_family_records(family).await?;
        if let Some(emitter) = &self.emitter {
            let credential = CredentialId::Family(family.to_owned());
            emitter.end_credential(user_id, &credential, code, message).await;
        }
        Ok(())
    }

    /// The writes of [`Self::revoke_family`], for a caller that ended its sockets already.
    async fn revoke_family_records(&self, family: &str) -> Result<(), ApiError> {
        self.refresh.revoke_family(family).await?;
        let until = self
            .clock_secs()
            .saturating_add(self.tokens.ttl_secs())
            .saturating_add(self.tokens.leeway_secs());
        self.revocations.revoke(&family_revocation(family), until).await?;
        Ok(())
    }

    fn clock_secs(&self) -> i64 {
        self.tokens.now_secs()
    }

    /// The sockets a logged-out credential opened end too, on every node.
    async fn end_sockets(&self, user_id: &str, credential: &CredentialId) {
        if let Some(emitter) = &self.emitter {
            emitter
                .end_credential(user_id, credential, ended::LOGGED_OUT, "logged out")
                .await;
        }
    }

    /// `refresh_token {token}` on a socket: the socket lives on with `token`, which must be
    /// valid and of the same user. Answers the new expiry (unix seconds, the JWT's `exp`).
    pub async fn rebind_socket(&self, current: &Principal, token: &str) -> Result<(i64, Principal), ApiError> {
        let next = self.by_token(token).await?;
        if next.user_id() != current.user_id() {
            return Err(ApiError::forbidden("the token belongs to another user"));
        }
        let exp = next.token().map_or(0, |(_, exp)| exp);
        Ok((exp, next))
    }

    async fn by_token(&self, token: &str) -> Result<Principal, ApiError> {
        let claims = self.tokens.verify(token)?;
        // The token itself, or its whole login: one lookup.
        let family = claims.fam.as_deref().map(family_revocation);
        let ids: Vec<&str> = std::iter::once(claims.jti.as_str()).chain(family.as_deref()).collect();
        if self.revocations.any_revoked(&ids).await? {
            return Err(ApiError::unauthorized(REVOKED));
        }
        Ok(Principal::by_token(
            &claims.sub,
            &claims.username,
            (&claims.jti, claims.exp),
            claims.exp.saturating_add(self.tokens.leeway_secs()),
            claims.fam.as_deref(),
        ))
    }

    async fn by_session(&self, id: &str) -> Result<Principal, ApiError> {
        if !is_session_id(id) {
            return Err(ApiError::unauthorized(BAD_SESSION));
        }
        match self.sessions.get(id).await? {
            Some(s) => Ok(Principal::by_session(&s.user_id, &s.username, id)),
            None => Err(ApiError::unauthorized(BAD_SESSION)),
        }
    }
}

/// The revocation entry that refuses every access token of a refresh family.
fn family_revocation(family: &str) -> String {
    format!("fam:{family}")
}

fn taken() -> ApiError {
    let mut e = ApiError::conflict("username: is already taken");
    e.field = Some("username".to_owned());
    e
}

#[async_trait]
impl Authenticator for AuthService {
    /// A presented Bearer token decides alone (an invalid one is not rescued by a cookie);
    /// otherwise the session cookie.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if let Some(token) = bearer_token(headers) {
            return self.by_token(token).await;
        }
        if let Some(id) = cookie(headers, &self.cookie.name) {
            // A page of another site must not ride on the browser's cookie.
            if !self.cookie_origins.allows(headers) {
                return Err(ApiError::forbidden(
                    "this origin may not use the session cookie: use a token, or list the origin in server.cors.allowed_origins",
                ));
            }
            return self.by_session(id).await;
        }
        Err(ApiError::unauthorized(NO_CREDENTIALS))
    }

    /// `auth.token` (with or without a `Bearer ` prefix), then the headers.
    async fn authenticate_socket(&self, auth: &serde_json::Value, headers: &HeaderMap) -> Result<Principal, ApiError> {
        match auth.get("token") {
            None | Some(serde_json::Value::Null) => self.authenticate(headers).await,
            Some(serde_json::Value::String(t)) => {
                let t = t.trim();
                let t = t
                    .strip_prefix("Bearer ")
                    .or_else(|| t.strip_prefix("bearer "))
                    .unwrap_or(t)
                    .trim();
                if t.is_empty() {
                    self.authenticate(headers).await
                } else {
                    self.by_token(t).await
                }
            }
            Some(_) => Err(ApiError::unauthorized("invalid token")),
        }
    }

    async fn recheck(&self, principal: &Principal) -> Result<Option<&'static str>, ApiError> {
        if let Some(id) = principal.session_id()
            && self.sessions.get(id).await?.is_none()
        {
            return Ok(Some(ended::LOGGED_OUT));
        }
        if let Some((jti, _)) = principal.token() {
            let family = principal.family().map(family_revocation);
            let ids: Vec<&str> = std::iter::once(jti).chain(family.as_deref()).collect();
            if self.revocations.any_revoked(&ids).await? {
                return Ok(Some(ended::REVOKED));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use confab_contract::fakes::{MemRefresh, MemRevocations, MemSessions, MemUsers};
    use confab_sdk::clock::{Clock, OffsetClock};
    use confab_sdk::storage::UserStore;

    use super::*;
    use crate::config::{Argon2Config, JwtKey};

    pub struct Fixture {
        pub svc: Arc<AuthService>,
        pub users: Arc<MemUsers>,
        pub revocations: Arc<MemRevocations>,
        pub clock: Arc<OffsetClock>,
    }

    /// Cheap argon2 parameters keep the tests fast.
    pub fn cheap_config() -> AuthConfig {
        let mut c = AuthConfig::default();
        c.password.argon2 = Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        c.jwt.keys = vec![JwtKey {
            kid: "k1".into(),
            secret: "unit-test-secret".into(),
        }];
        c
    }

    pub fn fixture(config: AuthConfig) -> Fixture {
        let users = Arc::new(MemUsers::default());
        let revocations = Arc::new(MemRevocations::default());
        let clock = Arc::new(OffsetClock::new(0));
        let stores = Stores {
            users: users.clone(),
            sessions: Arc::new(MemSessions::default()),
            revocations: revocations.clone(),
            refresh: Arc::new(MemRefresh),
            clock: clock.clone(),
        };
        let svc = Arc::new(AuthService::new(&config, stores, false, None).unwrap());
        Fixture {
            svc,
            users,
            revocations,
            clock,
        }
    }

    fn register_req(name: &str) -> RegisterRequest {
        RegisterRequest {
            username: name.into(),
            password: "password-1".into(),
            display_name: Some(" Al ".into()),
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("other=1; confab.sid={id}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn register_then_login_then_authenticate_both_ways() {
        let f = fixture(cheap_config());
        let reg = f.svc.register(register_req("alice")).await.unwrap();
        assert_eq!(reg.body.user.username, "alice");
        assert_eq!(reg.body.user.display_name.as_deref(), Some("Al"));
        let login = f
            .svc
            .login(LoginRequest {
                username: "ALICE".into(),
                password: "password-1".into(),
            })
            .await
            .unwrap();
        assert_eq!(login.body.user.id, reg.body.user.id);
        assert_ne!(login.session_id, reg.session_id, "a fresh session at every login");

        let p = f.svc.authenticate(&bearer(&login.body.token)).await.unwrap();
        assert_eq!(p.user_id(), reg.body.user.id);
        assert!(p.token().is_some() && p.session_id().is_none());
        let p = f.svc.authenticate(&with_cookie(&login.session_id)).await.unwrap();
        assert_eq!(p.session_id(), Some(login.session_id.as_str()));
        assert_eq!(f.svc.me(&p).await.unwrap().username, "alice");
    }

    #[tokio::test]
    async fn duplicates_conflict_regardless_of_case() {
        let f = fixture(cheap_config());
        f.svc.register(register_req("Bob")).await.unwrap();
        let e = f.svc.register(register_req("bob")).await.err().unwrap();
        assert_eq!(e.status().as_u16(), 409);
        assert_eq!(e.field.as_deref(), Some("username"));
    }

    #[tokio::test]
    async fn unknown_user_and_wrong_password_look_the_same() {
        let f = fixture(cheap_config());
        f.svc.register(register_req("carol")).await.unwrap();
        let wrong = f
            .svc
            .login(LoginRequest {
                username: "carol".into(),
                password: "nope-nope".into(),
            })
            .await
            .err()
            .unwrap();
        let unknown = f
            .svc
            .login(LoginRequest {
                username: "nobody".into(),
                password: "nope-nope".into(),
            })
            .await
            .err()
            .unwrap();
        let huge = f
            .svc
            .login(LoginRequest {
                username: "x".repeat(1000),
                password: "nope-nope".into(),
            })
            .await
            .err()
            .unwrap();
        assert_eq!(wrong.to_json(), unknown.to_json());
        assert_eq!(wrong.to_json(), huge.to_json());
        assert_eq!(wrong.message, BAD_CREDENTIALS);
    }

    #[tokio::test]
    async fn bcrypt_and_old_argon2_hashes_are_upgraded_at_login() {
        let f = fixture(cheap_config());
        let legacy = f
            .users
            .create_user(NewUser {
                username: "legacy".into(),
                display_name: None,
                password_hash: bcrypt::hash("old-password", 4).unwrap().replace("$2b$", "$2a$"),
            })
            .await
            .unwrap();
        f.svc
            .login(LoginRequest {
                username: "legacy".into(),
                password: "old-password".into(),
            })
            .await
            .unwrap();
        let upgraded = f.users.user_by_id(&legacy.id).await.unwrap().unwrap().password_hash;
        assert!(upgraded.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{upgraded}");

        // The parameters change: the next login re-hashes with the new ones.
        let mut stronger = cheap_config();
        stronger.password.argon2.memory_kib = 128;
        let svc2 = {
            let stores = Stores {
                users: f.users.clone(),
                sessions: Arc::new(MemSessions::default()),
                revocations: f.revocations.clone(),
                refresh: Arc::new(MemRefresh),
                clock: f.clock.clone(),
            };
            AuthService::new(&stronger, stores, false, None).unwrap()
        };
        svc2.login(LoginRequest {
            username: "legacy".into(),
            password: "old-password".into(),
        })
        .await
        .unwrap();
        let again = f.users.user_by_id(&legacy.id).await.unwrap().unwrap().password_hash;
        assert!(again.starts_with("$argon2id$v=19$m=128,t=1,p=1$"), "{again}");
        // A wrong password never touches the hash.
        assert!(
            svc2.login(LoginRequest {
                username: "legacy".into(),
                password: "bad-password".into()
            })
            .await
            .is_err()
        );
        assert_eq!(
            f.users.user_by_id(&legacy.id).await.unwrap().unwrap().password_hash,
            again
        );
    }

    #[tokio::test]
    async fn logout_revokes_the_token_and_deletes_the_session() {
        let f = fixture(cheap_config());
        let s = f.svc.register(register_req("dave")).await.unwrap();
        let mut both = bearer(&s.body.token);
        both.insert("cookie", format!("confab.sid={}", s.session_id).parse().unwrap());
        f.svc.logout(&both).await.unwrap();
        let e = f.svc.authenticate(&bearer(&s.body.token)).await.unwrap_err();
        assert_eq!(e.message, REVOKED);
        let e = f.svc.authenticate(&with_cookie(&s.session_id)).await.unwrap_err();
        assert_eq!(e.message, BAD_SESSION);
        // Revoked until exp + leeway.
        let claims = f.svc.tokens.verify(&s.body.token).unwrap();
        assert_eq!(f.revocations.until(&claims.jti), Some(claims.exp + 5));
        // Nothing valid presented: 401.
        assert_eq!(
            f.svc.logout(&HeaderMap::new()).await.unwrap_err().message,
            NO_CREDENTIALS
        );
    }

    #[tokio::test]
    async fn expired_garbage_and_missing_credentials_are_refused_with_reasons() {
        let mut c = cheap_config();
        c.jwt.ttl_secs = 10;
        c.jwt.leeway_secs = 0;
        let f = fixture(c);
        let s = f.svc.register(register_req("erin")).await.unwrap();
        assert_eq!(
            f.svc.authenticate(&bearer("garbage")).await.unwrap_err().message,
            "invalid token"
        );
        assert_eq!(
            f.svc.authenticate(&HeaderMap::new()).await.unwrap_err().message,
            NO_CREDENTIALS
        );
        assert_eq!(
            f.svc
                .authenticate(&with_cookie("not-a-session-id-at-all"))
                .await
                .unwrap_err()
                .message,
            BAD_SESSION
        );
        // A bad bearer is not rescued by a good cookie.
        let mut h = bearer("garbage");
        h.insert("cookie", format!("confab.sid={}", s.session_id).parse().unwrap());
        assert_eq!(f.svc.authenticate(&h).await.unwrap_err().message, "invalid token");
        f.clock.advance(11_000);
        let e = f.svc.authenticate(&bearer(&s.body.token)).await.unwrap_err();
        assert_eq!((e.message.as_str(), e.status().as_u16()), ("token expired", 401));
        assert!(f.clock.now_millis() > 0);
    }

    #[tokio::test]
    async fn sockets_authenticate_by_auth_token_header_or_cookie() {
        let f = fixture(cheap_config());
        let s = f.svc.register(register_req("frank")).await.unwrap();
        let none = HeaderMap::new();
        let t = &s.body.token;
        for auth in [
            serde_json::json!({"token": t}),
            serde_json::json!({"token": format!("Bearer {t}")}),
        ] {
            assert_eq!(
                f.svc.authenticate_socket(&auth, &none).await.unwrap().username(),
                "frank"
            );
        }
        let empty = serde_json::json!({});
        assert!(f.svc.authenticate_socket(&empty, &bearer(t)).await.is_ok());
        assert!(
            f.svc
                .authenticate_socket(&empty, &with_cookie(&s.session_id))
                .await
                .is_ok()
        );
        let e = f
            .svc
            .authenticate_socket(&serde_json::json!({"token": 42}), &none)
            .await
            .unwrap_err();
        assert_eq!(e.message, "invalid token");
        let e = f
            .svc
            .authenticate_socket(&serde_json::json!({"token": "nope"}), &bearer(t))
            .await
            .unwrap_err();
        assert_eq!(e.message, "invalid token", "auth.token comes first");
        assert_eq!(
            f.svc.authenticate_socket(&empty, &none).await.unwrap_err().message,
            NO_CREDENTIALS
        );
    }

    #[tokio::test]
    async fn validation_errors_name_their_field() {
        let f = fixture(cheap_config());
        let cases = [
            (
                RegisterRequest {
                    username: "ab".into(),
                    password: "password-1".into(),
                    display_name: None,
                },
                "username",
            ),
            (
                RegisterRequest {
                    username: "abc".into(),
                    password: "short".into(),
                    display_name: None,
                },
                "password",
            ),
            (
                RegisterRequest {
                    username: "abc".into(),
                    password: "password-1".into(),
                    display_name: Some(" ".into()),
                },
                "displayName",
            ),
        ];
        for (req, field) in cases {
            let e = f.svc.register(req).await.err().unwrap();
            assert_eq!((e.status().as_u16(), e.field.as_deref()), (400, Some(field)));
        }
    }
}
