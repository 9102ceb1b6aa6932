//! The auth plugin through the real binary: register, login, me, logout, cookies, token
//! expiry, revocation and key rotation, and the production profile's secret check.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, StartOptions, run_cli, unique};

pub const PASSWORD: &str = "correct horse battery";

pub async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A client without a cookie store: it sends exactly the credentials a test gives it.
pub fn bare() -> reqwest::Client {
    reqwest::Client::new()
}

/// The `Set-Cookie` value for the session cookie, if any.
pub fn session_set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("confab.sid="))
        .map(str::to_owned)
}

/// `confab.sid=<id>` from a `Set-Cookie` value, ready for a `Cookie` header.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

pub struct Account {
    pub username: String,
    pub token: String,
    /// `confab.sid=<id>`.
    pub cookie: String,
    pub user: Value,
    pub refresh: String,
}

pub async fn register(s: &Server, client: &reqwest::Client, username: &str) -> Account {
    let r = client
        .post(s.url("/auth/register"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = session_set_cookie(&r).map(|c| cookie_pair(&c));
    let (status, body) = json(r).await;
    assert_eq!(status, 201, "register {username}: {body}");
    Account {
        username: username.to_owned(),
        token: body["token"].as_str().unwrap().to_owned(),
        cookie: cookie.expect("session cookie"),
        user: body["user"].clone(),
        refresh: body["refreshToken"].as_str().expect("refreshToken").to_owned(),
    }
}

async fn me_with_token(s: &Server, token: &str) -> (u16, Value) {
    json(bare().get(s.url("/auth/me")).bearer_auth(token).send().await.unwrap()).await
}

async fn me_with_cookie(s: &Server, cookie: &str) -> (u16, Value) {
    json(
        bare()
            .get(s.url("/auth/me"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn assert_unauthorized((status, body): &(u16, Value), message: &str) {
    assert_eq!(*status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert_eq!(body["message"], message, "{body}");
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn b64url_encode(bytes: &[u8]) -> String {
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

fn jwt_part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').nth(i).unwrap())).unwrap()
}

#[tokio::test]
async fn register_returns_201_with_token_user_and_session_cookie() {
    let s = Server::start("").await;
    let name = unique("reg");
    let r = bare()
        .post(s.url("/auth/register"))
        .json(&json!({"username": name, "password": PASSWORD, "displayName": "  Régine  "}))
        .send()
        .await
        .unwrap();
    let set_cookie = session_set_cookie(&r).expect("a session cookie");
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    let (status, body) = json(r).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["username"], name.as_str());
    assert_eq!(body["user"]["displayName"], "Régine", "trimmed");
    let id = body["user"]["id"].as_str().unwrap();
    assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(
        body["user"].as_object().unwrap().len(),
        3,
        "only id, username, displayName: {body}"
    );

    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(
            set_cookie.split("; ").any(|a| a == attr),
            "{attr} missing in {set_cookie}"
        );
    }
    assert!(
        !set_cookie.contains("Secure"),
        "no Secure outside production: {set_cookie}"
    );

    let token = body["token"].as_str().unwrap();
    let header = jwt_part(token, 0);
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("HS256"), Some("generated"))
    );
    let claims = jwt_part(token, 1);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["username"], name.as_str());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some("confab"), Some("confab"))
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // The token alone authenticates; so does the cookie alone.
    let (status, me) = me_with_token(&s, token).await;
    assert_eq!((status, &me), (200, &body["user"]));
    let (status, me) = me_with_cookie(&s, &cookie_pair(&set_cookie)).await;
    assert_eq!((status, &me), (200, &body["user"]));
}

#[tokio::test]
async fn register_names_each_invalid_field() {
    let s = Server::start("").await;
    let ok = unique("val");
    let cases = [
        (json!({"password": PASSWORD}), "username"),
        (json!({"username": 42, "password": PASSWORD}), "username"),
        (json!({"username": "ab", "password": PASSWORD}), "username"),
        (json!({"username": "x".repeat(33), "password": PASSWORD}), "username"),
        (json!({"username": "has space", "password": PASSWORD}), "username"),
        (json!({"username": "émile", "password": PASSWORD}), "username"),
        (json!({"username": ok}), "password"),
        (json!({"username": ok, "password": "short"}), "password"),
        (json!({"username": ok, "password": "x".repeat(257)}), "password"),
        (
            json!({"username": ok, "password": PASSWORD, "displayName": "   "}),
            "displayName",
        ),
        (
            json!({"username": ok, "password": PASSWORD, "displayName": "x".repeat(65)}),
            "displayName",
        ),
        (
            json!({"username": ok, "password": PASSWORD, "displayName": 7}),
            "displayName",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = json(bare().post(s.url("/auth/register")).json(&body).send().await.unwrap()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["code"], "validation_failed", "{err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
    // None of that created the account.
    register(&s, &bare(), &ok).await;
}

#[tokio::test]
async fn duplicate_usernames_conflict_whatever_the_case() {
    let s = Server::start("").await;
    let name = unique("Dup");
    register(&s, &bare(), &name).await;
    for variant in [name.clone(), name.to_lowercase(), name.to_uppercase()] {
        let body = json!({"username": variant, "password": PASSWORD});
        let (status, err) = json(bare().post(s.url("/auth/register")).json(&body).send().await.unwrap()).await;
        assert_eq!(status, 409, "{variant}: {err}");
        assert_eq!(err["code"], "conflict");
        assert_eq!(err["field"], "username");
    }
}

#[tokio::test]
async fn login_returns_a_fresh_token_and_session() {
    let s = Server::start("").await;
    let name = unique("login");
    let acc = register(&s, &bare(), &name).await;
    // Usernames match case-insensitively.
    let r = bare()
        .post(s.url("/auth/login"))
        .json(&json!({"username": name.to_uppercase(), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = cookie_pair(&session_set_cookie(&r).expect("session cookie"));
    let (status, body) = json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], acc.user);
    assert_ne!(body["token"], acc.token.as_str());
    assert_ne!(cookie, acc.cookie, "a fresh session id at every login");
    assert_eq!(me_with_cookie(&s, &cookie).await.0, 200);
    assert_eq!(me_with_cookie(&s, &acc.cookie).await.0, 200, "other sessions live on");

    for (body, field) in [
        (json!({"password": PASSWORD}), "username"),
        (json!({"username": name}), "password"),
        (json!({"username": "", "password": PASSWORD}), "username"),
        (json!({"username": name, "password": ""}), "password"),
        (json!({"username": name, "password": "x".repeat(257)}), "password"),
    ] {
        let (status, err) = json(bare().post(s.url("/auth/login")).json(&body).send().await.unwrap()).await;
        assert_eq!((status, err["field"].as_str()), (400, Some(field)), "{body} -> {err}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_byte_identical_401s() {
    let s = Server::start("").await;
    let name = unique("twin");
    register(&s, &bare(), &name).await;
    let attempt = |username: String| {
        let c = bare();
        let url = s.url("/auth/login");
        async move {
            let r = c
                .post(url)
                .json(&json!({"username": username, "password": "not the password"}))
                .send()
                .await
                .unwrap();
            assert!(session_set_cookie(&r).is_none(), "no cookie on failure");
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let wrong = attempt(name.clone()).await;
    let unknown = attempt(unique("ghost")).await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown, "bodies must not tell the cases apart");
    let body: Value = serde_json::from_slice(&wrong.1).unwrap();
    assert_eq!(
        body,
        json!({"message": "invalid username or password", "code": "unauthorized"})
    );
}

#[tokio::test]
async fn me_refuses_missing_garbage_tampered_and_foreign_tokens() {
    let s = Server::start("").await;
    let acc = register(&s, &bare(), &unique("me")).await;

    let none = json(bare().get(s.url("/auth/me")).send().await.unwrap()).await;
    assert_unauthorized(&none, "authentication required");
    assert_unauthorized(&me_with_token(&s, "garbage").await, "invalid token");
    assert_unauthorized(&me_with_token(&s, "a.b.c").await, "invalid token");
    assert_unauthorized(
        &me_with_cookie(&s, "confab.sid=0123456789abcdef0123456789abcdef").await,
        "session expired or invalid",
    );
    assert_unauthorized(
        &me_with_cookie(&s, "confab.sid=../../etc").await,
        "session expired or invalid",
    );

    // Payload changed, signature kept.
    let parts: Vec<&str> = acc.token.split('.').collect();
    let mut claims = jwt_part(&acc.token, 1);
    claims["sub"] = json!("ffffffffffffffffffffffff");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url_encode(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_unauthorized(&me_with_token(&s, &forged).await, "invalid token");
    // alg "none", no signature.
    let none_header = b64url_encode(br#"{"alg":"none","typ":"JWT","kid":"default"}"#);
    assert_unauthorized(
        &me_with_token(&s, &format!("{none_header}.{}.", parts[1])).await,
        "invalid token",
    );

    // Signed by another server's key: same kid, other secret; and an unknown kid.
    let other =
        Server::start_with(StartOptions::new("").env("CONFAB_AUTH__JWT__SECRET", "another-secret-entirely-0123456789"))
            .await;
    let foreign = register(&other, &bare(), &unique("foreign")).await;
    assert_unauthorized(&me_with_token(&s, &foreign.token).await, "invalid token");
    let rotated = "[[auth.jwt.keys]]\nkid = \"elsewhere\"\nsecret = \"yet-another-secret-0123456789abcdef\"\n";
    let third = Server::start(rotated).await;
    let foreign = register(&third, &bare(), &unique("foreign")).await;
    assert_eq!(jwt_part(&foreign.token, 0)["kid"], "elsewhere");
    assert_unauthorized(&me_with_token(&s, &foreign.token).await, "invalid token");

    // A bad Bearer token is not rescued by a good cookie.
    let r = bare()
        .get(s.url("/auth/me"))
        .bearer_auth("garbage")
        .header("cookie", &acc.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
    assert_unauthorized(&json(r).await, "invalid token");
}

#[tokio::test]
async fn the_cookie_store_alone_authenticates() {
    let s = Server::start("").await;
    // `s.http` keeps cookies like a browser and never sends a token.
    let acc = register(&s, &s.http, &unique("jar")).await;
    let (status, me) = json(s.http.get(s.url("/auth/me")).send().await.unwrap()).await;
    assert_eq!((status, me), (200, acc.user));
}

#[tokio::test]
async fn logout_kills_the_cookie_and_the_token() {
    let s = Server::start("").await;
    let acc = register(&s, &s.http, &unique("bye")).await;
    assert_eq!(me_with_token(&s, &acc.token).await.0, 200);

    let r = s
        .http
        .post(s.url("/auth/logout"))
        .bearer_auth(&acc.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cleared = session_set_cookie(&r).expect("the cookie is cleared");
    assert!(
        cleared.starts_with("confab.sid=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(r.bytes().await.unwrap().is_empty());

    assert_unauthorized(&me_with_token(&s, &acc.token).await, "token revoked");
    assert_unauthorized(&me_with_cookie(&s, &acc.cookie).await, "session expired or invalid");
    // The browser-like client dropped the cookie.
    assert_unauthorized(
        &json(s.http.get(s.url("/auth/me")).send().await.unwrap()).await,
        "authentication required",
    );
    // Logging out again, or without credentials, is refused.
    assert_unauthorized(
        &json(
            bare()
                .post(s.url("/auth/logout"))
                .bearer_auth(&acc.token)
                .send()
                .await
                .unwrap(),
        )
        .await,
        "token revoked",
    );
    assert_unauthorized(
        &json(bare().post(s.url("/auth/logout")).send().await.unwrap()).await,
        "authentication required",
    );

    // Logging in again works, with a new token.
    let token = login_token(&s, &acc.username).await;
    assert_eq!(me_with_token(&s, &token).await.0, 200);
}

/// A fresh token from `POST /auth/login` (asserting 200).
pub async fn login_token(s: &Server, username: &str) -> String {
    let r = bare()
        .post(s.url("/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(status, 200, "login {username}: {body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn logout_with_the_cookie_alone_ends_that_session_and_its_logins_token_only() {
    let s = Server::start("").await;
    let acc = register(&s, &bare(), &unique("one")).await;
    let other = login_token(&s, &acc.username).await;
    let r = bare()
        .post(s.url("/auth/logout"))
        .header("cookie", &acc.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_unauthorized(&me_with_cookie(&s, &acc.cookie).await, "session expired or invalid");
    // The token minted by the same login goes with its session; another login's stays.
    assert_unauthorized(&me_with_token(&s, &acc.token).await, "token revoked");
    assert_eq!(me_with_token(&s, &other).await.0, 200, "another login is untouched");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let opts = StartOptions::new("")
        .env("CONFAB_AUTH__JWT__TTL_SECS", "1")
        .env("CONFAB_AUTH__JWT__LEEWAY_SECS", "0");
    let s = Server::start_with(opts).await;
    let acc = register(&s, &bare(), &unique("exp")).await;
    let claims = jwt_part(&acc.token, 1);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_unauthorized(&me_with_token(&s, &acc.token).await, "token expired");
    // The session is not bound to the token's lifetime.
    assert_eq!(me_with_cookie(&s, &acc.cookie).await.0, 200);
}

#[tokio::test]
async fn idle_sessions_expire() {
    let s = Server::start_with(StartOptions::new("").env("CONFAB_AUTH__SESSION__IDLE_SECS", "1")).await;
    let acc = register(&s, &bare(), &unique("idle")).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_unauthorized(&me_with_cookie(&s, &acc.cookie).await, "session expired or invalid");
    assert_eq!(
        me_with_token(&s, &acc.token).await.0,
        200,
        "tokens live by their own expiry"
    );
}

fn keys_toml(keys: &[(&str, &str)]) -> String {
    keys.iter()
        .map(|(kid, secret)| format!("[[auth.jwt.keys]]\nkid = \"{kid}\"\nsecret = \"{secret}\"\n\n"))
        .collect()
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    const OLD: (&str, &str) = ("2025-01", "the-old-signing-secret-0123456789abcdef");
    const NEW: (&str, &str) = ("2025-06", "the-new-signing-secret-0123456789abcdef");
    let dir = tempfile::TempDir::new().unwrap();
    let toml = keys_toml(&[OLD]);
    let s = Server::start_with(StartOptions::new(&toml).data_dir(dir.path())).await;
    let acc = register(&s, &bare(), &unique("rot")).await;
    assert_eq!(jwt_part(&acc.token, 0)["kid"], OLD.0);
    assert_eq!(s.stop().await.code(), Some(0));

    // New key first: it signs; the old one still verifies.
    let toml = keys_toml(&[NEW, OLD]);
    let s = Server::start_with(StartOptions::new(&toml).data_dir(dir.path())).await;
    let (status, me) = me_with_token(&s, &acc.token).await;
    assert_eq!((status, &me), (200, &acc.user));
    let r = bare()
        .post(s.url("/auth/login"))
        .json(&json!({"username": acc.username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(status, 200);
    let new_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_part(&new_token, 0)["kid"], NEW.0);
    assert_eq!(s.stop().await.code(), Some(0));

    // Old key retired: its tokens are foreign now; the new ones live on.
    let toml = keys_toml(&[NEW]);
    let s = Server::start_with(StartOptions::new(&toml).data_dir(dir.path())).await;
    assert_unauthorized(&me_with_token(&s, &acc.token).await, "invalid token");
    assert_eq!(me_with_token(&s, &new_token).await.0, 200);
}

#[tokio::test]
async fn secure_cookies_when_configured() {
    let s = Server::start("[auth.session]\nsecure = true\ncookie_name = \"confab.sid\"\n").await;
    let r = bare()
        .post(s.url("/auth/register"))
        .json(&json!({"username": unique("sec"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let c = session_set_cookie(&r).unwrap();
    assert!(c.split("; ").any(|a| a == "Secure"), "{c}");
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn production_refuses_default_or_short_secrets() {
    let prod = [("CONFAB_PROFILE", "production")];
    let out = run_cli(&["config", "check", "--config", "confab.toml"], "", &prod);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("auth.jwt.secret"), "{text}");

    let out = run_cli(
        &["config", "check", "--config", "confab.toml"],
        "[auth.jwt]\nsecret = \"too-short\"\n",
        &prod,
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("auth.jwt.secret") && text.contains("32"), "{text}");

    let toml = keys_toml(&[("a", "a-long-enough-secret-0123456789abcdef"), ("b", "short")]);
    let out = run_cli(&["config", "check", "--config", "confab.toml"], &toml, &prod);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("auth.jwt.keys[1].secret"), "{text}");

    // The old backend's JWT_SECRET is honoured and satisfies the check.
    let out = run_cli(
        &["config", "check", "--config", "confab.toml"],
        "",
        &[
            ("CONFAB_PROFILE", "production"),
            ("JWT_SECRET", "a-long-enough-secret-0123456789abcdef"),
        ],
    );
    assert!(!output_text(&out).contains("auth.jwt.secret"), "{}", output_text(&out));

    // `serve` refuses to boot too.
    let err = Server::try_start(StartOptions::new("").env("CONFAB_PROFILE", "production"))
        .await
        .err()
        .expect("must not boot");
    assert!(err.contains("auth.jwt.secret"), "{err}");
}

#[tokio::test]
async fn production_marks_the_cookie_secure() {
    // NODE_ENV=production is the old backend's way to select the production profile.
    let opts = StartOptions::new("")
        .env("NODE_ENV", "production")
        .env("JWT_SECRET", "a-long-enough-secret-0123456789abcdef");
    let s = Server::start_with(opts).await;
    let r = bare()
        .post(s.url("/auth/register"))
        .json(&json!({"username": unique("prod"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let c = session_set_cookie(&r).unwrap();
    assert!(c.split("; ").any(|a| a == "Secure"), "{c}");
}

#[tokio::test]
async fn openapi_documents_the_auth_routes() {
    let s = Server::start("").await;
    let (status, doc) = json(s.http.get(s.url("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    for (path, method) in [
        ("/auth/register", "post"),
        ("/auth/login", "post"),
        ("/auth/me", "get"),
        ("/auth/logout", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} missing");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["cookieAuth"]["name"], "confab.sid");
}

/// A token signed with `secret` for `user`, as a forger would make it.
fn sign(secret: &str, kid: &str, user: &Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": user["id"], "username": user["username"], "iat": now, "exp": now + 600,
        "jti": unique("forged"), "iss": "confab", "aud": "confab"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_fresh_deployment_generates_its_secret_and_keeps_it() {
    const OLD_BUILT_IN: &str = "confab-development-secret-do-not-use-in-production";
    let dir = tempfile::TempDir::new().unwrap();
    let s = Server::start_with(StartOptions::new("").data_dir(dir.path())).await;
    if crate::support::storage::sqlite_only("generated secret: the file beside the database") {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("confab.secret")).expect("confab.secret beside confab.db");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner-only");
    }
    let acc = register(&s, &bare(), &unique("gen")).await;
    assert_eq!(jwt_part(&acc.token, 0)["kid"], "generated");
    // Nobody can forge with the secret earlier releases printed in their source.
    for kid in ["default", "generated"] {
        assert_unauthorized(
            &me_with_token(&s, &sign(OLD_BUILT_IN, kid, &acc.user)).await,
            "invalid token",
        );
    }
    assert_eq!(s.stop().await.code(), Some(0));

    // The second boot keeps the secret: the token still works.
    let s = Server::start_with(StartOptions::new("").data_dir(dir.path())).await;
    let (status, me) = me_with_token(&s, &acc.token).await;
    assert_eq!((status, &me), (200, &acc.user));
    assert_eq!(s.stop().await.code(), Some(0));

    // Configuring the old string is refused outright, in development too.
    let out = run_cli(
        &["config", "check", "--config", "confab.toml"],
        &format!("[auth.jwt]\nsecret = \"{OLD_BUILT_IN}\"\n"),
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("auth.jwt.secret"), "{text}");
}
