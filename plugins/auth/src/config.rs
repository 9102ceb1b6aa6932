//! The `[auth]` section.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use serde::{Deserialize, Serialize};

/// The signing secret that earlier releases built in. It is public (it was in the
/// source), so it is refused in every profile and tokens signed with it never verify.
pub const OLD_BUILT_IN_SECRET: &str = "confab-development-secret-do-not-use-in-production";
/// The `kid` of tokens signed with the deployment secret (no secret configured).
pub const GENERATED_KID: &str = "generated";
/// Shortest secret the production profile accepts (HS256 wants at least 256 bits).
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;
/// The `kid` of `auth.jwt.secret` when `auth.jwt.keys` is empty.
pub const DEFAULT_KID: &str = "default";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub jwt: JwtConfig,
    pub password: PasswordConfig,
    pub refresh: RefreshConfig,
    pub session: SessionConfig,
}

/// Refresh tokens (`POST /auth/refresh`): one family per login, rotated on every use.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// Absolute lifetime of a login's refresh tokens, from the login.
    pub ttl_secs: u64,
    /// A spent refresh token presented again within this answers the same successor
    /// (two tabs refreshing at once); later, it revokes its whole family.
    pub grace_secs: u64,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            ttl_secs: 30 * 24 * 3600,
            grace_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 secret used when `keys` is empty (kid `default`). Env: `JWT_SECRET`. Empty:
    /// the deployment secret the storage generates and keeps (not in production).
    pub secret: String,
    /// Rotation: the first key signs, every key verifies (chosen by `kid`).
    pub keys: Vec<JwtKey>,
    /// Token lifetime.
    pub ttl_secs: u64,
    /// Clock skew tolerated when checking `exp`.
    pub leeway_secs: u64,
    pub issuer: String,
    pub audience: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: String::new(),
            keys: Vec::new(),
            ttl_secs: 3600,
            leeway_secs: 5,
            issuer: "confab".to_owned(),
            audience: "confab".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtKey {
    pub kid: String,
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Minimum length in characters.
    pub min_length: usize,
    /// Maximum length in bytes (UTF-8), so that hashing cannot be abused.
    pub max_bytes: usize,
    /// Concurrent hash computations; 0 means the number of CPUs.
    pub hash_concurrency: usize,
    pub argon2: Argon2Config,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            min_length: 8,
            max_bytes: 256,
            hash_concurrency: 0,
            argon2: Argon2Config::default(),
        }
    }
}

/// argon2id cost parameters; the defaults are OWASP's recommendation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// Lifetime from login, whatever the activity.
    pub absolute_secs: u64,
    /// Lifetime without a request.
    pub idle_secs: u64,
    /// Adds `Secure` to the cookie; always on under the production profile.
    pub secure: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "confab.sid".to_owned(),
            absolute_secs: 7 * 24 * 3600,
            idle_secs: 24 * 3600,
            secure: false,
        }
    }
}

impl AuthConfig {
    /// The keys in effect: `jwt.keys`, or `jwt.secret` as kid `default`.
    /// The signing and verifying keys: `keys`, else `secret`, else the deployment
    /// secret (`generated`, what the storage keeps).
    pub fn effective_keys(&self, generated: Option<&str>) -> Vec<JwtKey> {
        if !self.jwt.keys.is_empty() {
            return self.jwt.keys.clone();
        }
        if !self.jwt.secret.is_empty() {
            return vec![JwtKey {
                kid: DEFAULT_KID.to_owned(),
                secret: self.jwt.secret.clone(),
            }];
        }
        generated
            .map(|g| {
                vec![JwtKey {
                    kid: GENERATED_KID.to_owned(),
                    secret: g.to_owned(),
                }]
            })
            .unwrap_or_default()
    }

    /// Whether tokens are signed with the storage's deployment secret.
    pub fn uses_generated_secret(&self) -> bool {
        self.jwt.keys.is_empty() && self.jwt.secret.is_empty()
    }
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks one signing secret; `key` is its config key.
fn check_secret(key: &str, secret: &str, profile: &RunProfile, out: &mut Vec<ConfigProblem>) {
    if secret == OLD_BUILT_IN_SECRET {
        out.push(problem(
            key,
            "is the development secret of earlier releases, which is public; remove it (a secret is then generated and kept with the storage) or set your own",
        ));
    } else if secret.is_empty() && profile.is_production() {
        out.push(problem(
            key,
            format!("the production profile needs an explicit secret of {MIN_PRODUCTION_SECRET_BYTES} bytes or more (set JWT_SECRET or CONFAB_AUTH__JWT__SECRET)"),
        ));
    } else if profile.is_production() && secret.len() < MIN_PRODUCTION_SECRET_BYTES {
        out.push(problem(
            key,
            format!(
                "is {} bytes; the production profile needs at least {MIN_PRODUCTION_SECRET_BYTES} random bytes",
                secret.len()
            ),
        ));
    }
}

fn is_cookie_name(s: &str) -> bool {
    // RFC 6265 token characters.
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Section for AuthConfig {
    fn validate(&self, profile: &RunProfile) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let jwt = &self.jwt;
        // An empty secret outside production means: use the generated deployment secret.
        if jwt.keys.is_empty() {
            check_secret("jwt.secret", &jwt.secret, profile, &mut out);
        }
        for (i, k) in jwt.keys.iter().enumerate() {
            if k.kid.is_empty() {
                out.push(problem(format!("jwt.keys[{i}].kid"), "must not be empty"));
            } else if jwt.keys[..i].iter().any(|o| o.kid == k.kid) {
                out.push(problem(
                    format!("jwt.keys[{i}].kid"),
                    format!("`{}` is used by an earlier key", k.kid),
                ));
            }
            if k.secret.is_empty() {
                out.push(problem(format!("jwt.keys[{i}].secret"), "must not be empty"));
            }
            check_secret(&format!("jwt.keys[{i}].secret"), &k.secret, profile, &mut out);
        }
        if !(1..=366 * 24 * 3600).contains(&jwt.ttl_secs) {
            out.push(problem("jwt.ttl_secs", "must be between 1 and 31622400 (a year)"));
        }
        if !(60..=366 * 24 * 3600).contains(&self.refresh.ttl_secs) {
            out.push(problem("refresh.ttl_secs", "must be between 60 and 31622400 (a year)"));
        }
        if !(1..=300).contains(&self.refresh.grace_secs) {
            out.push(problem("refresh.grace_secs", "must be between 1 and 300"));
        }
        if jwt.leeway_secs > 300 {
            out.push(problem("jwt.leeway_secs", "must be at most 300"));
        }
        if jwt.issuer.is_empty() {
            out.push(problem("jwt.issuer", "must not be empty"));
        }
        if jwt.audience.is_empty() {
            out.push(problem("jwt.audience", "must not be empty"));
        }

        let pw = &self.password;
        if pw.min_length == 0 {
            out.push(problem("password.min_length", "must be at least 1"));
        }
        if !(1..=4096).contains(&pw.max_bytes) {
            out.push(problem("password.max_bytes", "must be between 1 and 4096"));
        } else if pw.min_length > pw.max_bytes {
            out.push(problem("password.min_length", "must not exceed password.max_bytes"));
        }
        if pw.hash_concurrency > 1024 {
            out.push(problem(
                "password.hash_concurrency",
                "must be at most 1024 (0 means the number of CPUs)",
            ));
        }
        let a = &pw.argon2;
        if let Err(e) = argon2::Params::new(a.memory_kib, a.iterations, a.parallelism, None) {
            out.push(problem("password.argon2", format!("invalid argon2 parameters: {e}")));
        } else if u64::from(a.memory_kib) > 4 * 1024 * 1024 {
            out.push(problem("password.argon2.memory_kib", "must be at most 4194304 (4 GiB)"));
        } else if a.memory_kib < 8 * a.parallelism {
            out.push(problem(
                "password.argon2.memory_kib",
                "must be at least 8 × parallelism",
            ));
        }

        let s = &self.session;
        if !is_cookie_name(&s.cookie_name) {
            out.push(problem(
                "session.cookie_name",
                "must be a non-empty cookie token (letters, digits, !#$%&'*+-.^_`|~)",
            ));
        }
        if s.absolute_secs == 0 {
            out.push(problem("session.absolute_secs", "must be at least 1"));
        }
        if s.idle_secs == 0 {
            out.push(problem("session.idle_secs", "must be at least 1"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use confab_sdk::config::parse_section;
    use serde_json::json;

    use super::*;

    fn dev() -> RunProfile {
        RunProfile {
            name: "development".into(),
        }
    }
    fn prod() -> RunProfile {
        RunProfile {
            name: "production".into(),
        }
    }

    #[test]
    fn defaults_are_valid_in_development_only() {
        assert!(AuthConfig::default().validate(&dev()).is_empty());
        let problems = parse_section::<AuthConfig>("auth", &json!({}), &prod()).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "auth.jwt.secret");
        assert!(problems[0].message.contains("explicit secret"), "{problems:?}");
    }

    #[test]
    fn production_needs_32_byte_secrets_in_every_key() {
        let ok = "k".repeat(32);
        let c = json!({"jwt": {"secret": "short"}});
        let p = parse_section::<AuthConfig>("auth", &c, &prod()).unwrap_err();
        assert_eq!(p[0].key, "auth.jwt.secret");
        assert!(p[0].message.contains("at least 32"), "{p:?}");
        assert!(parse_section::<AuthConfig>("auth", &json!({"jwt": {"secret": ok}}), &prod()).is_ok());

        // With keys, the unused `secret` does not matter; each key's secret does.
        let c = json!({"jwt": {"keys": [{"kid": "new", "secret": ok}, {"kid": "old", "secret": "tiny"}]}});
        let p = parse_section::<AuthConfig>("auth", &c, &prod()).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "auth.jwt.keys[1].secret");
        assert!(parse_section::<AuthConfig>("auth", &c, &dev()).is_ok());
    }

    #[test]
    fn keys_need_unique_non_empty_kids() {
        let c = json!({"jwt": {"keys": [{"kid": "a", "secret": "x"}, {"kid": "a", "secret": "y"}, {"secret": "z"}]}});
        let p = parse_section::<AuthConfig>("auth", &c, &dev()).unwrap_err();
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["auth.jwt.keys[1].kid", "auth.jwt.keys[2].kid"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let c = json!({"jwt": {"ttl": 5, "keys": [{"kid": "a", "secret": "x", "alg": "none"}]}, "session": {"idle_secs": 0}});
        let p = parse_section::<AuthConfig>("auth", &c, &dev()).unwrap_err();
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"auth.jwt.ttl"), "{p:?}");
        assert!(keys.contains(&"auth.jwt.keys"), "{p:?}");
        let c = json!({"session": {"idle_secs": 0, "cookie_name": "a b"}, "password": {"argon2": {"iterations": 0}}});
        let p = parse_section::<AuthConfig>("auth", &c, &dev()).unwrap_err();
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "auth.password.argon2",
                "auth.session.cookie_name",
                "auth.session.idle_secs"
            ]
        );
    }

    #[test]
    fn effective_keys_fall_back_to_the_secret_then_the_generated_one() {
        let mut c = AuthConfig::default();
        assert!(c.uses_generated_secret());
        assert_eq!(
            c.effective_keys(Some("g")),
            vec![JwtKey {
                kid: "generated".into(),
                secret: "g".into()
            }]
        );
        c.jwt.secret = "configured".into();
        assert!(!c.uses_generated_secret());
        assert_eq!(c.effective_keys(Some("g"))[0].kid, "default");
    }

    #[test]
    fn the_old_built_in_secret_is_refused_in_every_profile() {
        for name in ["development", "production"] {
            let profile = RunProfile { name: name.into() };
            let given = serde_json::json!({"jwt": {"secret": OLD_BUILT_IN_SECRET}});
            let problems = parse_section::<AuthConfig>("auth", &given, &profile).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == "auth.jwt.secret" && p.message.contains("public")),
                "{name}: {problems:?}"
            );
        }
    }
}
