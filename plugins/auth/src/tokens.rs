//! JWT issue and verification: HS256 only, keys chosen by `kid`, times from the clock
//! service (so tests can move time), expiry checked here rather than by the library
//! (which reads the system clock).

use std::collections::HashMap;

use confab_sdk::ApiError;
use confab_sdk::clock::SharedClock;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtKey;

/// Longest token we try to parse; real ones are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub username: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub iss: String,
    pub aud: String,
    /// The refresh token family the token was issued from (one per login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

/// Why a token was refused. The messages are what clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Expired => "token expired",
            TokenError::Invalid => "invalid token",
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let mut err = ApiError::unauthorized(e.message());
        if e == TokenError::Expired {
            // The client should refresh and retry, not log in again.
            err.reason = Some("token_expired");
        }
        err
    }
}

pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

pub struct TokenService {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    ttl_secs: i64,
    leeway_secs: i64,
    issuer: String,
    audience: String,
    validation: Validation,
    clock: SharedClock,
}

pub struct TokenSettings {
    pub keys: Vec<JwtKey>,
    pub ttl_secs: u64,
    pub leeway_secs: u64,
    pub issuer: String,
    pub audience: String,
}

impl TokenService {
    /// `keys` must not be empty (config validation guarantees it); the first one signs.
    pub fn new(settings: TokenSettings, clock: SharedClock) -> Result<Self, String> {
        let first = settings.keys.first().ok_or("auth.jwt.keys: no signing key")?;
        let verifying = settings
            .keys
            .iter()
            .map(|k| (k.kid.clone(), DecodingKey::from_secret(k.secret.as_bytes())))
            .collect();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the clock service in `verify`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        Ok(TokenService {
            signing_kid: first.kid.clone(),
            signing: EncodingKey::from_secret(first.secret.as_bytes()),
            verifying,
            ttl_secs: i64::try_from(settings.ttl_secs).map_err(|_| "auth.jwt.ttl_secs: too large")?,
            leeway_secs: i64::try_from(settings.leeway_secs).map_err(|_| "auth.jwt.leeway_secs: too large")?,
            issuer: settings.issuer,
            audience: settings.audience,
            validation,
            clock,
        })
    }

    /// Now, by the clock service, in unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.clock.now_millis().div_euclid(1000)
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn leeway_secs(&self) -> i64 {
        self.leeway_secs
    }

    pub fn issue(&self, user_id: &str, username: &str, family: Option<&str>) -> Result<Issued, ApiError> {
        let iat = self.clock.now_millis().div_euclid(1000);
        let claims = Claims {
            sub: user_id.to_owned(),
            username: username.to_owned(),
            iat,
            exp: iat + self.ttl_secs,
            jti: confab_sdk::ids::random_token(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            fam: family.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing).map_err(ApiError::internal)?;
        Ok(Issued { token, claims })
    }

    /// Checks signature, algorithm, key, issuer, audience and expiry. Revocation is the
    /// caller's business (it needs the store).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // Pinned: `none`, RS256 with the secret as a public key, and the like are refused
        // before any key is chosen (the library checks again).
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(TokenError::Invalid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        let now_ms = self.clock.now_millis();
        if now_ms >= claims.exp.saturating_add(self.leeway_secs).saturating_mul(1000) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confab_sdk::clock::{Clock, OffsetClock};

    use super::*;

    fn key(kid: &str, secret: &str) -> JwtKey {
        JwtKey {
            kid: kid.into(),
            secret: secret.into(),
        }
    }

    fn service(keys: Vec<JwtKey>, clock: Arc<OffsetClock>) -> TokenService {
        let settings = TokenSettings {
            keys,
            ttl_secs: 60,
            leeway_secs: 2,
            issuer: "confab".into(),
            audience: "confab".into(),
        };
        TokenService::new(settings, clock).unwrap()
    }

    fn clock() -> Arc<OffsetClock> {
        Arc::new(OffsetClock::new(0))
    }

    #[test]
    fn issues_tokens_with_the_expected_claims_and_kid() {
        let c = clock();
        let s = service(vec![key("k1", "secret-one")], c.clone());
        let issued = s.issue("0123456789abcdef01234567", "alice", None).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let claims = s.verify(&issued.token).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.sub, "0123456789abcdef01234567");
        assert_eq!(claims.username, "alice");
        assert_eq!(claims.exp - claims.iat, 60);
        assert!((claims.iat - c.now_millis() / 1000).abs() <= 1);
        assert_eq!(claims.jti.len(), 32);
        assert_ne!(
            claims.jti,
            s.issue("x", "y", None).unwrap().claims.jti,
            "every token has its own jti"
        );
    }

    #[test]
    fn expiry_follows_the_clock_with_leeway() {
        let c = clock();
        let s = service(vec![key("k1", "secret-one")], c.clone());
        let issued = s.issue("u", "alice", None).unwrap();
        // Still valid within exp + leeway.
        let until_exp = issued.claims.exp * 1000 - c.now_millis();
        c.advance(until_exp + 1_000);
        assert!(s.verify(&issued.token).is_ok());
        c.advance(1_000);
        assert_eq!(s.verify(&issued.token), Err(TokenError::Expired));
    }

    #[test]
    fn rotation_old_keys_verify_new_key_signs() {
        let c = clock();
        let before = service(vec![key("old", "secret-old")], c.clone());
        let old_token = before.issue("u", "alice", None).unwrap().token;
        let after = service(vec![key("new", "secret-new"), key("old", "secret-old")], c.clone());
        assert!(after.verify(&old_token).is_ok());
        let new_token = after.issue("u", "alice", None).unwrap().token;
        assert_eq!(
            jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(),
            Some("new")
        );
        // Once the old key is dropped, its tokens are foreign.
        let only_new = service(vec![key("new", "secret-new")], c);
        assert_eq!(only_new.verify(&old_token), Err(TokenError::Invalid));
        assert!(only_new.verify(&new_token).is_ok());
    }

    fn forge(header: &Header, claims: &Claims, secret: &str) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn refuses_foreign_malformed_and_other_algorithm_tokens() {
        let c = clock();
        let s = service(vec![key("k1", "secret-one")], c);
        let claims = s.issue("u", "alice", None).unwrap().claims;
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());

        assert_eq!(
            s.verify(&forge(&h, &claims, "wrong-secret")),
            Err(TokenError::Invalid),
            "wrong secret"
        );
        let mut unknown = h.clone();
        unknown.kid = Some("nope".into());
        assert_eq!(
            s.verify(&forge(&unknown, &claims, "secret-one")),
            Err(TokenError::Invalid),
            "unknown kid"
        );
        let mut no_kid = h.clone();
        no_kid.kid = None;
        assert_eq!(
            s.verify(&forge(&no_kid, &claims, "secret-one")),
            Err(TokenError::Invalid),
            "missing kid"
        );
        let mut hs512 = h.clone();
        hs512.alg = Algorithm::HS512;
        assert_eq!(
            s.verify(&forge(&hs512, &claims, "secret-one")),
            Err(TokenError::Invalid),
            "other algorithm"
        );
        let other_aud = Claims {
            aud: "someone-else".into(),
            ..claims.clone()
        };
        assert_eq!(
            s.verify(&forge(&h, &other_aud, "secret-one")),
            Err(TokenError::Invalid),
            "audience"
        );
        let other_iss = Claims {
            iss: "someone-else".into(),
            ..claims.clone()
        };
        assert_eq!(
            s.verify(&forge(&h, &other_iss, "secret-one")),
            Err(TokenError::Invalid),
            "issuer"
        );

        // alg "none": header {"alg":"none","kid":"k1"}, no signature.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            b64(serde_json::to_string(&claims).unwrap().as_bytes())
        );
        assert_eq!(s.verify(&none), Err(TokenError::Invalid), "alg none");
        for garbage in ["", "garbage", "a.b.c", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert_eq!(s.verify(garbage), Err(TokenError::Invalid), "{garbage:.20}");
        }
    }

    /// Unpadded base64url, enough to hand-craft a token.
    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
