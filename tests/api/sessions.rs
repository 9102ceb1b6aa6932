//! A socket lives as long as its credential: logout ends the sockets of the token and
//! the session it ends (with `session_ended` first), a token's expiry ends its sockets,
//! and `refresh_token` keeps a socket alive on a newer token of the same user.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::auth::{Account, bare, login_token, register};
use crate::support::raw::{
    Ws, emit_ack, emit_many, next_event, next_text, sio_connect, sio_connect_bare, ws, ws_closed_within,
    ws_small_window, ws_with,
};
use crate::support::{Server, StartOptions, unique};

const CHEAP: &str = "[auth.password.argon2]\nmemory_kib = 1024\niterations = 1\n";

/// True once the socket is ended: the namespace DISCONNECT arrives or the connection closes.
async fn ended_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match next_text(ws, left).await {
            None => return tokio::time::Instant::now() < deadline,
            Some(t) if t == "41" || t.starts_with("41{") => return true,
            Some(_) => {}
        }
    }
}

async fn token_socket(s: &Server, token: &str) -> Ws {
    let mut w = ws(s.addr).await;
    let answer = sio_connect(&mut w, token).await;
    assert!(answer.starts_with("40"), "{answer}");
    w
}

async fn logout(s: &Server, acc: &Account, token: Option<&str>) {
    let mut req = bare().post(s.url("/auth/logout")).header("cookie", &acc.cookie);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 204);
}

/// `session_ended` with `code`, then the socket ends, within `within`.
async fn assert_ended(ws: &mut Ws, code: &str, within: Duration) {
    let started = Instant::now();
    let ended = next_event(ws, "session_ended", within)
        .await
        .unwrap_or_else(|| panic!("no session_ended within {within:?}"));
    assert_eq!(ended["code"], code, "{ended}");
    assert!(ended["message"].is_string(), "{ended}");
    assert!(
        ended_within(ws, within).await,
        "the socket is closed after session_ended"
    );
    crate::support::note(&format!("sessions: {code} ended a socket in {:?}", started.elapsed()));
}

#[tokio::test]
async fn logout_ends_the_sockets_of_what_it_ends_and_no_others() {
    let s = Server::start(CHEAP).await;
    let acc = register(&s, &bare(), &unique("out")).await;
    let username = acc.username.clone();
    let mut by_token = token_socket(&s, &acc.token).await;
    let mut by_cookie = ws_with(s.addr, &[("cookie", &acc.cookie)]).await;
    assert!(sio_connect_bare(&mut by_cookie).await.starts_with("40"));
    // Another login of the same user: another token, another session.
    let other_token = login_token(&s, &username).await;
    let mut other = token_socket(&s, &other_token).await;

    let asked = Instant::now();
    logout(&s, &acc, Some(&acc.token)).await;
    assert_ended(&mut by_token, "logged_out", Duration::from_secs(2)).await;
    assert_ended(&mut by_cookie, "logged_out", Duration::from_secs(2)).await;
    assert!(asked.elapsed() < Duration::from_secs(3), "{:?}", asked.elapsed());
    // The other login's socket is untouched and works.
    let ack = emit_ack(&mut other, 1, "sync", json!({"limit": 1})).await.expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
}

#[tokio::test]
async fn a_logout_ends_the_sockets_of_its_cookies_session_even_once_that_expired() {
    let opts = StartOptions::new(CHEAP).env("CONFAB_AUTH__SESSION__IDLE_SECS", "1");
    let s = Server::start_with(opts).await;
    let acc = register(&s, &bare(), &unique("gone")).await;
    let mut by_cookie = ws_with(s.addr, &[("cookie", &acc.cookie)]).await;
    assert!(sio_connect_bare(&mut by_cookie).await.starts_with("40"));
    // Each look at the session renews it: look less often than it idles out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        if me_by_cookie(&s, &acc.cookie).await == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the session never expired");
    }
    // The session is gone but its socket is not; the logout passes by the token.
    logout(&s, &acc, Some(&acc.token)).await;
    assert_ended(&mut by_cookie, "logged_out", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_expiring_token_ends_its_socket_unless_refreshed_in_time() {
    let opts = StartOptions::new(CHEAP)
        .env("CONFAB_AUTH__JWT__TTL_SECS", "4")
        .env("CONFAB_AUTH__JWT__LEEWAY_SECS", "0");
    let s = Server::start_with(opts).await;
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // The first token's exp is at least this (issued no earlier, 4 s lifetime).
    let first_exp_at_least = unix_now() + 4;
    let acc = register(&s, &bare(), &unique("exp")).await;
    let stranger = register(&s, &bare(), &unique("str")).await;
    let mut expiring = token_socket(&s, &acc.token).await;
    let second = login_token(&s, &acc.username).await;
    let mut refreshed = token_socket(&s, &second).await;

    // A token of another user is refused and changes nothing.
    let no = emit_ack(&mut refreshed, 1, "refresh_token", json!({"token": stranger.token}))
        .await
        .expect("ack");
    assert_eq!(
        (no["ok"].as_bool(), no["error"]["code"].as_str()),
        (Some(false), Some("forbidden")),
        "{no}"
    );
    let no = emit_ack(&mut refreshed, 2, "refresh_token", json!({"token": "garbage"}))
        .await
        .expect("ack");
    assert_eq!(no["error"]["code"], "unauthorized", "{no}");
    // Malformed payloads are refused by field, and the socket goes on.
    for (id, bad) in [(5, json!({})), (6, json!({"token": 42})), (7, json!("x"))] {
        let no = emit_ack(&mut refreshed, id, "refresh_token", bad).await.expect("ack");
        assert_eq!(
            (no["error"]["code"].as_str(), no["error"]["field"].as_str()),
            (Some("validation_failed"), Some("token")),
            "{no}"
        );
    }

    // A fresh token of the same user, in time: the socket lives on with it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let third = login_token(&s, &acc.username).await;
    let ok = emit_ack(&mut refreshed, 3, "refresh_token", json!({"token": third}))
        .await
        .expect("ack");
    assert_eq!(ok["ok"], true, "{ok}");
    let exp = ok["exp"].as_i64().expect("exp in unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now + 2..=now + 5).contains(&exp), "exp {exp}, now {now}");

    // The first token expires: its socket ends, once the time has come.
    assert_ended(&mut expiring, "token_expired", Duration::from_secs(5)).await;
    assert!(unix_now() >= first_exp_at_least, "not before the expiry");
    // The refreshed socket outlives its first token (which expired with the other).
    let ack = emit_ack(&mut refreshed, 4, "sync", json!({"limit": 1}))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "the refreshed socket is still served: {ack}");
    // And ends with the token it was rebound to.
    assert_ended(&mut refreshed, "token_expired", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cookies_work_only_from_the_servers_own_or_a_listed_origin() {
    let toml = format!("[server.cors]\nallowed_origins = [\"*\", \"https://app.example.com\"]\n{CHEAP}");
    let s = Server::start(&toml).await;
    let acc = register(&s, &bare(), &unique("orig")).await;
    let own = format!("http://{}", s.addr);
    let handshake = |origin: Option<&'static str>| {
        let (addr, cookie) = (s.addr, acc.cookie.clone());
        let own = own.clone();
        async move {
            let origin = origin.map_or(own, str::to_owned);
            let mut w = ws_with(addr, &[("cookie", &cookie), ("origin", &origin)]).await;
            sio_connect_bare(&mut w).await
        }
    };
    // A sibling site, even with `*` in the CORS list: refused with the code first.
    let refused = handshake(Some("https://evil.example.net")).await;
    assert!(
        refused.starts_with("44") && refused.contains("forbidden: "),
        "{refused}"
    );
    assert!(handshake(None).await.starts_with("40"), "the server's own origin");
    assert!(
        handshake(Some("https://app.example.com")).await.starts_with("40"),
        "a listed origin"
    );
    // No Origin header at all (not a browser page): accepted.
    let mut plain = ws_with(s.addr, &[("cookie", &acc.cookie)]).await;
    assert!(sio_connect_bare(&mut plain).await.starts_with("40"));

    // REST: a cookie from a foreign origin is refused, a token from anywhere is fine.
    let me = |origin: &'static str, token: Option<&str>| {
        let mut req = bare().get(s.url("/auth/me")).header("origin", origin);
        req = match token {
            Some(t) => req.bearer_auth(t),
            None => req.header("cookie", &acc.cookie),
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me("https://evil.example.net", None).await, 403);
    assert_eq!(me("https://app.example.com", None).await, 200);
    assert_eq!(me("https://evil.example.net", Some(&acc.token)).await, 200);
}

#[tokio::test]
async fn a_cookie_logout_also_ends_the_token_and_refresh_tokens_of_the_same_login() {
    let s = Server::start(CHEAP).await;
    let acc = register(&s, &bare(), &unique("both")).await;
    let mut by_token = token_socket(&s, &acc.token).await;
    // Only the cookie is presented, as a browser would.
    logout(&s, &acc, None).await;
    assert_ended(&mut by_token, "logged_out", Duration::from_secs(2)).await;
    let r = bare()
        .get(s.url("/auth/me"))
        .bearer_auth(&acc.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "token revoked", "{body}");
    // And the login's refresh tokens.
    assert_eq!(refresh(&s, &acc.refresh).await.0, 401);
}

async fn refresh(s: &Server, token: &str) -> (u16, Value) {
    let r = bare()
        .post(s.url("/auth/refresh"))
        .json(&json!({"refreshToken": token}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn me_status(s: &Server, token: &str) -> u16 {
    bare()
        .get(s.url("/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// register's refresh token (the `Account` helper keeps only the access token).
async fn register_with_refresh(s: &Server, name: &str) -> Value {
    let r = bare()
        .post(s.url("/auth/register"))
        .json(&json!({"username": name, "password": crate::auth::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replay_after_the_grace_revokes_the_login() {
    let toml = format!("[auth.refresh]\ngrace_secs = 1\n{CHEAP}");
    let s = Server::start(&toml).await;
    let first = register_with_refresh(&s, &unique("rot")).await;
    let r1 = first["refreshToken"]
        .as_str()
        .expect("register answers a refreshToken")
        .to_owned();

    let (status, second) = refresh(&s, &r1).await;
    assert_eq!(status, 200, "{second}");
    let (t2, r2) = (
        second["token"].as_str().unwrap(),
        second["refreshToken"].as_str().unwrap(),
    );
    assert_ne!(r2, r1, "every use rotates");
    assert_eq!(second["user"], first["user"]);
    assert_eq!(me_status(&s, t2).await, 200);
    // Two tabs at once: the same spent token within the grace gets the same successor.
    let (status, again) = refresh(&s, &r1).await;
    assert_eq!((status, again["refreshToken"].as_str()), (200, Some(r2)), "{again}");
    let (status, body) = refresh(&s, "garbage").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, body) = bare()
        .post(s.url("/auth/refresh"))
        .json(&json!({}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 400, "{:?}", body.text().await);

    // Move on once more, with a socket on the newest token.
    let (status, third) = refresh(&s, r2).await;
    assert_eq!(status, 200, "{third}");
    let t3 = third["token"].as_str().unwrap().to_owned();
    let r3 = third["refreshToken"].as_str().unwrap().to_owned();
    let mut sock = token_socket(&s, &t3).await;

    // After the grace, the first token again: a replay. The whole login ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = refresh(&s, &r1).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already used"), "{body}");
    assert_ended(&mut sock, "revoked", Duration::from_secs(2)).await;
    assert_eq!(me_status(&s, &t3).await, 401, "the login's tokens are revoked");
    assert_eq!(me_status(&s, t2).await, 401);
    assert_eq!(refresh(&s, &r3).await.0, 401, "and its refresh tokens");
}

#[tokio::test]
async fn logout_revokes_the_refresh_tokens_of_its_login() {
    let s = Server::start(CHEAP).await;
    let first = register_with_refresh(&s, &unique("lo")).await;
    let token = first["token"].as_str().unwrap();
    let r = bare()
        .post(s.url("/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, body) = refresh(&s, first["refreshToken"].as_str().unwrap()).await;
    assert_eq!(status, 401, "{body}");
}

async fn me_by_cookie(s: &Server, cookie: &str) -> u16 {
    bare()
        .get(s.url("/auth/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// On the embedded default (in-process cluster) sessions, revocations and refresh
/// tokens are kept with the storage: a restart brings back no logged-out token and
/// forgets no login.
#[tokio::test]
async fn a_restart_forgets_no_logout_session_or_refresh_token() {
    let dir = tempfile::TempDir::new().unwrap();
    let toml = format!("[auth.refresh]\ngrace_secs = 1\n{CHEAP}");
    let start = || Server::start_with(StartOptions::new(&toml).data_dir(dir.path()));
    let s = start().await;
    let kept = register(&s, &bare(), &unique("kept")).await;
    let gone = register(&s, &bare(), &unique("gone")).await;
    logout(&s, &gone, Some(&gone.token)).await;
    let (status, rotated) = refresh(&s, &kept.refresh).await;
    assert_eq!(status, 200, "{rotated}");
    let next = rotated["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(s.stop().await.code(), Some(0));

    let s = start().await;
    assert_eq!(
        me_status(&s, &gone.token).await,
        401,
        "a logged-out token stays revoked"
    );
    assert_eq!(me_by_cookie(&s, &gone.cookie).await, 401, "its session stays ended");
    assert_eq!(
        refresh(&s, &gone.refresh).await.0,
        401,
        "its refresh token stays revoked"
    );
    assert_eq!(me_by_cookie(&s, &kept.cookie).await, 200, "a live session is kept");
    assert_eq!(me_status(&s, &kept.token).await, 200);
    // The refresh token spent before the restart, after its grace: a replay.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = refresh(&s, &kept.refresh).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already used"), "{body}");
    assert_eq!(refresh(&s, &next).await.0, 401, "the replay ended the login");
    assert_eq!(s.stop().await.code(), Some(0));
}

/// A revoked socket that stopped reading (so socketioxide's `session_ended` and disconnect
/// only queue, or fail on a full buffer) is still ended within a second or so: its
/// connection is closed under it, long before the write-stall timeout.
#[tokio::test]
async fn a_revoked_socket_that_stopped_reading_is_closed_at_once() {
    let toml = format!(
        "[server]\nwrite_stall_timeout_secs = 600\n\n[server.socket]\nmax_buffer_size = 64\n\n\
         [ratelimit]\nenabled = false\n{CHEAP}"
    );
    let s = Server::start(&toml).await;
    let stalled_user = register(&s, &bare(), &unique("stalled")).await;
    let sender = register(&s, &bare(), &unique("flood")).await;
    let mut stalled = ws_small_window(s.addr).await;
    assert!(sio_connect(&mut stalled, &stalled_user.token).await.starts_with("40"));
    let mut flood = token_socket(&s, &sender.token).await;
    // Typing events for a client that reads nothing: volatile, so a full buffer drops
    // them (a message would close the socket itself, streams.rs); far more than its window,
    // the server's send buffer and the socket's buffer of 64 packets hold.
    let typing = json!({"to": stalled_user.user["id"], "isTyping": true});
    let failed = emit_many(&mut flood, "typing", &typing, 20_000, 16).await;
    assert!(failed.is_empty(), "{:?}", failed.first());

    let ended = Instant::now();
    logout(&s, &stalled_user, Some(&stalled_user.token)).await;
    assert!(
        ws_closed_within(&mut stalled, Duration::from_secs(5)).await,
        "the stalled socket's connection is closed"
    );

    crate::support::note(&format!(
        "sessions: a stalled revoked socket was closed {:?} after the logout (read out included)",
        ended.elapsed()
    ));
}
