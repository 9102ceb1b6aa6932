//! Who is calling. The auth plugin provides an [`Authenticator`]; other plugins use it
//! for their routes and read the socket's [`Principal`] from the realtime context.

use std::sync::Arc;

use salvo::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::async_trait;
use crate::error::ApiError;

/// An authenticated user, as established by a token or a session. Every socket keeps
/// its principal for its life, so the strings share one allocation (docs/kernel.md,
/// "Memory per idle socket"); the methods read them.
#[derive(Clone)]
pub struct Principal {
    /// The user id, the username, the session id, the token id and the refresh family,
    /// back to back (an absent one is empty).
    text: Box<str>,
    /// Where each of the first four ends in `text`; the family runs to its end.
    ends: [u32; 4],
    /// The token's `exp`, if it used a token.
    token_exp: i64,
    expires_at: i64,
    /// Which of the session, the token, the expiry and the family are there.
    has: u8,
}

const HAS_SESSION: u8 = 1;
const HAS_TOKEN: u8 = 2;
const HAS_EXPIRY: u8 = 4;
const HAS_FAMILY: u8 = 8;

impl Principal {
    /// A principal established by token `jti` (expiring at `exp`, unix seconds) of
    /// refresh family `family`, accepted until `expires_at` (`exp` plus the leeway).
    pub fn by_token(
        user_id: &str,
        username: &str,
        (jti, exp): (&str, i64),
        expires_at: i64,
        family: Option<&str>,
    ) -> Principal {
        let has = HAS_TOKEN | HAS_EXPIRY | if family.is_some() { HAS_FAMILY } else { 0 };
        Principal::pack([user_id, username, "", jti, family.unwrap_or("")], exp, expires_at, has)
    }

    /// A principal established by session `session_id` (the cookie), until revoked.
    pub fn by_session(user_id: &str, username: &str, session_id: &str) -> Principal {
        Principal::pack([user_id, username, session_id, "", ""], 0, 0, HAS_SESSION)
    }

    fn pack(parts: [&str; 5], token_exp: i64, expires_at: i64, has: u8) -> Principal {
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 4];
        for (i, part) in parts.iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                // Ids and names are short: validated or made here (a token's are signed).
                *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
            }
        }
        Principal {
            text: text.into_boxed_str(),
            ends,
            token_exp,
            expires_at,
            has,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    fn has(&self, flag: u8) -> bool {
        self.has & flag != 0
    }

    pub fn user_id(&self) -> &str {
        self.part(0)
    }

    pub fn username(&self) -> &str {
        self.part(1)
    }

    /// The session this request or socket came in with, if it used the cookie.
    pub fn session_id(&self) -> Option<&str> {
        self.has(HAS_SESSION).then(|| self.part(2))
    }

    /// The JWT id and expiry (unix seconds), if it used a token.
    pub fn token(&self) -> Option<(&str, i64)> {
        self.has(HAS_TOKEN).then(|| (self.part(3), self.token_exp))
    }

    /// When the credential stops being accepted (unix seconds; a token's `exp` plus the
    /// leeway): a socket opened with it is ended then, unless it was rebound to a newer
    /// credential first (`refresh_token`). `None`: until revoked (a session).
    pub fn expires_at(&self) -> Option<i64> {
        self.has(HAS_EXPIRY).then_some(self.expires_at)
    }

    /// The refresh token family of the login the token came from.
    pub fn family(&self) -> Option<&str> {
        self.has(HAS_FAMILY).then(|| self.part(4))
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.user_id())
            .field("username", &self.username())
            .field("session_id", &self.session_id())
            .field("token", &self.token())
            .field("expires_at", &self.expires_at())
            .field("family", &self.family())
            .finish()
    }
}

/// A credential whose sockets a revocation ends, on every node: a login's refresh token
/// family (every token issued from it), a token that has none, or a session. A socket
/// belongs to the credential of its current [`Principal`] ([`CredentialId::opened`]), so
/// the kernel ends a user's sockets by looking through that user's room: no room per
/// credential, which cost every socket about 250 bytes for its life (docs/kernel.md,
/// "Memory per idle socket").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum CredentialId {
    Family(String),
    Token(String),
    Session(String),
}

impl CredentialId {
    /// What ends the sockets of token `jti`: its family when it has one (every revocation
    /// of such a token revokes its family too), else the token.
    pub fn token(jti: &str, family: Option<&str>) -> CredentialId {
        match family {
            Some(family) => CredentialId::Family(family.to_owned()),
            None => CredentialId::Token(jti.to_owned()),
        }
    }

    /// Whether a socket bound to `p` was opened with this credential.
    pub fn opened(&self, p: &Principal) -> bool {
        match self {
            CredentialId::Family(f) => p.family() == Some(f.as_str()),
            CredentialId::Token(jti) => p.family().is_none() && p.token().is_some_and(|(j, _)| j == jti),
            CredentialId::Session(id) => p.session_id() == Some(id.as_str()),
        }
    }

    /// The room that sockets joined for this credential in Confab before it ended them
    /// by their principal: nodes still running such a version in a rolling upgrade keep
    /// their sockets there.
    pub fn legacy_room(&self) -> String {
        match self {
            CredentialId::Family(f) => format!("cred:fam:{f}"),
            CredentialId::Token(jti) => format!("cred:jti:{jti}"),
            CredentialId::Session(id) => format!("cred:sid:{id}"),
        }
    }
}

/// Why a socket was ended (`session_ended {code, message}`, DESIGN §4).
pub mod ended {
    pub const EVENT: &str = "session_ended";
    pub const LOGGED_OUT: &str = "logged_out";
    pub const REVOKED: &str = "revoked";
    pub const TOKEN_EXPIRED: &str = "token_expired";
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates a REST request from its headers (Bearer token or session cookie).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError>;
    /// Authenticates a socket handshake: `auth.token`, then the headers.
    async fn authenticate_socket(&self, auth: &serde_json::Value, headers: &HeaderMap) -> Result<Principal, ApiError>;
    /// Whether `principal`'s credential still stands, asked for every socket of a node
    /// that may have missed a revocation (it was cut off from the cluster backend).
    /// `Ok(None)`: it does; `Ok(Some(code))`: end its sockets with that [`ended`] code;
    /// an error: unknown for now (the kernel asks again on the next recovery).
    async fn recheck(&self, principal: &Principal) -> Result<Option<&'static str>, ApiError>;
}

pub type SharedAuthenticator = Arc<dyn Authenticator>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_reads_back_what_it_was_made_of() {
        let p = Principal::by_token("u1", "ann", ("j1", 100), 130, Some("f1"));
        assert_eq!((p.user_id(), p.username()), ("u1", "ann"));
        assert_eq!(p.token(), Some(("j1", 100)));
        assert_eq!(
            (p.expires_at(), p.family(), p.session_id()),
            (Some(130), Some("f1"), None)
        );
        let p = Principal::by_token("u1", "ann", ("j2", 100), 130, None);
        assert_eq!((p.token(), p.family()), (Some(("j2", 100)), None));
        let p = Principal::by_session("u2", "bo", "s1");
        assert_eq!((p.user_id(), p.username(), p.session_id()), ("u2", "bo", Some("s1")));
        assert_eq!((p.token(), p.expires_at(), p.family()), (None, None, None));
        let p = Principal::by_token("", "", ("", 0), 0, Some(""));
        assert_eq!((p.user_id(), p.token(), p.family()), ("", Some(("", 0)), Some("")));
    }

    #[test]
    fn a_credential_opened_exactly_the_sockets_it_names() {
        let of_login = Principal::by_token("u1", "ann", ("j1", 100), 130, Some("f1"));
        let bare_token = Principal::by_token("u1", "ann", ("j2", 100), 130, None);
        let by_cookie = Principal::by_session("u1", "ann", "s3");

        // A token of a login ends by its family: its own and its siblings' sockets.
        assert_eq!(CredentialId::token("j1", Some("f1")), CredentialId::Family("f1".into()));
        assert!(CredentialId::Family("f1".into()).opened(&of_login));
        assert!(!CredentialId::Family("f1".into()).opened(&bare_token));
        assert!(!CredentialId::Family("f3".into()).opened(&of_login));

        assert_eq!(CredentialId::token("j2", None), CredentialId::Token("j2".into()));
        assert!(CredentialId::Token("j2".into()).opened(&bare_token));
        assert!(
            !CredentialId::Token("j1".into()).opened(&of_login),
            "ends by its family"
        );
        assert!(!CredentialId::Token("j2".into()).opened(&of_login));

        assert!(CredentialId::Session("s3".into()).opened(&by_cookie));
        assert!(!CredentialId::Session("s3".into()).opened(&of_login));
        assert!(!CredentialId::Family("f1".into()).opened(&by_cookie));
        assert!(!CredentialId::Token("j1".into()).opened(&by_cookie));
    }

    #[test]
    fn a_credential_reads_back_from_the_wire_and_names_its_old_room() {
        let c = CredentialId::Session("s1".into());
        let wire = serde_json::to_string(&c).unwrap();
        assert_eq!(wire, r#"{"kind":"session","id":"s1"}"#);
        assert_eq!(serde_json::from_str::<CredentialId>(&wire).unwrap(), c);
        assert_eq!(c.legacy_room(), "cred:sid:s1");
        assert_eq!(CredentialId::Family("f".into()).legacy_room(), "cred:fam:f");
        assert_eq!(CredentialId::Token("j".into()).legacy_room(), "cred:jti:j");
    }
}
