//! The session cookie's `Set-Cookie` values.

/// How the session cookie is written.
#[derive(Clone, Debug)]
pub struct CookieSettings {
    pub name: String,
    /// `Max-Age`: the session's absolute lifetime, so browsers drop it when the server does.
    pub max_age_secs: u64,
    /// `Secure`: under the production profile or `auth.session.secure = true`.
    pub secure: bool,
}

impl CookieSettings {
    fn attributes(&self, max_age: u64) -> String {
        // Lax: sent on top-level navigation, not on cross-site subrequests (CSRF).
        let secure = if self.secure { "; Secure" } else { "" };
        format!("Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}")
    }

    /// The cookie carrying a new session id.
    pub fn session(&self, id: &str) -> String {
        format!("{}={id}; {}", self.name, self.attributes(self.max_age_secs))
    }

    /// A cookie that makes browsers forget the session at once.
    pub fn clear(&self) -> String {
        format!("{}=; {}", self.name, self.attributes(0))
    }
}

/// Whether a cookie value can be a session id. Anything else is refused without asking
/// the store (ids are 32 hex characters; the bound leaves room for other backends).
pub fn is_session_id(value: &str) -> bool {
    (16..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_and_clearing_cookies() {
        let mut c = CookieSettings {
            name: "confab.sid".into(),
            max_age_secs: 604_800,
            secure: false,
        };
        assert_eq!(
            c.session("abc"),
            "confab.sid=abc; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(c.clear(), "confab.sid=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax");
        c.secure = true;
        assert!(c.session("abc").ends_with("; HttpOnly; SameSite=Lax; Secure"));
        assert!(
            c.clear().ends_with("; Secure"),
            "clearing must match the attributes it clears"
        );
    }

    #[test]
    fn session_id_shape() {
        assert!(is_session_id(&confab_sdk::ids::random_token()));
        assert!(!is_session_id(""));
        assert!(!is_session_id("short"));
        assert!(!is_session_id("0123456789abcdef; evil=1"));
        assert!(!is_session_id(&"a".repeat(129)));
    }
}
