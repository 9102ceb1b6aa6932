//! Input rules for registration and login. Every error names its field.

use confab_sdk::ApiError;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const DISPLAY_NAME_MAX: usize = 64;
/// Usernames longer than this cannot exist (old accounts included), so login skips the
/// store for them.
pub const LOGIN_USERNAME_MAX_BYTES: usize = 256;

/// 3-32 characters of `A-Z a-z 0-9 _ . -`. Uniqueness (case-insensitive) is the store's.
pub fn username(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::validation("username", "must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ApiError::validation(
            "username",
            format!("contains {c:?}; only letters A-Z and a-z, digits, '_', '.' and '-' are allowed"),
        ));
    }
    // All characters are ASCII here, so bytes are characters.
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&name.len()) {
        return Err(ApiError::validation(
            "username",
            format!("must be {USERNAME_MIN} to {USERNAME_MAX} characters long"),
        ));
    }
    Ok(())
}

/// At least `min_chars` characters and at most `max_bytes` bytes.
pub fn password(pw: &str, min_chars: usize, max_bytes: usize) -> Result<(), ApiError> {
    if pw.len() > max_bytes {
        return Err(ApiError::validation(
            "password",
            format!("must be at most {max_bytes} bytes"),
        ));
    }
    if pw.chars().count() < min_chars {
        return Err(ApiError::validation(
            "password",
            format!("must be at least {min_chars} characters long"),
        ));
    }
    Ok(())
}

/// Trimmed; absent or null means none; otherwise 1-64 characters without control characters.
pub fn display_name(name: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = name else {
        return Ok(None);
    };
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ApiError::validation(
            "displayName",
            "must not be blank (omit it to have none)",
        ));
    }
    if trimmed.chars().count() > DISPLAY_NAME_MAX {
        return Err(ApiError::validation(
            "displayName",
            format!("must be at most {DISPLAY_NAME_MAX} characters long"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "displayName",
            "must not contain control characters",
        ));
    }
    Ok(Some(trimmed.to_owned()))
}

/// Login only checks presence and size: old accounts may predate the username rules.
pub fn login(username: &str, pw: &str, max_password_bytes: usize) -> Result<(), ApiError> {
    if username.is_empty() {
        return Err(ApiError::validation("username", "must not be empty"));
    }
    if pw.is_empty() {
        return Err(ApiError::validation("password", "must not be empty"));
    }
    if pw.len() > max_password_bytes {
        return Err(ApiError::validation(
            "password",
            format!("must be at most {max_password_bytes} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<impl Sized, ApiError>) -> Option<String> {
        r.err().and_then(|e| e.field)
    }

    #[test]
    fn usernames() {
        for ok in ["abc", "Alice_01", "a.b-c", &"x".repeat(32)] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", &"x".repeat(33), "with space", "émile", "a/b", "a@b", "bob\n"] {
            assert_eq!(field(username(bad)).as_deref(), Some("username"), "{bad:?}");
        }
        assert!(username("a b").unwrap_err().message.contains("' '"));
    }

    #[test]
    fn passwords() {
        assert!(password("12345678", 8, 256).is_ok());
        assert!(
            password("ééééééé\u{e9}", 8, 256).is_ok(),
            "characters, not bytes, count for the minimum"
        );
        assert_eq!(field(password("1234567", 8, 256)).as_deref(), Some("password"));
        assert_eq!(field(password(&"x".repeat(257), 8, 256)).as_deref(), Some("password"));
        assert!(password(&"x".repeat(256), 8, 256).is_ok());
        assert_eq!(
            field(password(&"é".repeat(129), 8, 256)).as_deref(),
            Some("password"),
            "258 bytes"
        );
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name(None).unwrap(), None);
        assert_eq!(display_name(Some("  Alice  ")).unwrap().as_deref(), Some("Alice"));
        assert!(display_name(Some(&"é".repeat(64))).is_ok());
        for bad in ["", "   ", &"x".repeat(65), "a\u{7}b"] {
            assert_eq!(
                field(display_name(Some(bad))).as_deref(),
                Some("displayName"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn login_checks_presence_and_size_only() {
        assert!(login("legacy user", "pw", 256).is_ok());
        assert_eq!(field(login("", "pw", 256)).as_deref(), Some("username"));
        assert_eq!(field(login("u", "", 256)).as_deref(), Some("password"));
        assert_eq!(field(login("u", &"x".repeat(300), 256)).as_deref(), Some("password"));
    }
}
