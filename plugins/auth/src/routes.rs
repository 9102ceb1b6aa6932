//! The `/auth` routes. Handlers find the service in the depot, put there by this router's
//! own hoop (so nothing leaks onto other plugins' routes).

use std::sync::Arc;

use confab_sdk::ApiError;
use confab_sdk::ErrorCode;
use confab_sdk::auth::Authenticator;
use confab_sdk::http::json_body;
use confab_sdk::salvo::http::header::{CACHE_CONTROL, SET_COOKIE, WWW_AUTHENTICATE};
use confab_sdk::salvo::http::{HeaderValue, StatusCode};
use confab_sdk::salvo::prelude::*;
use confab_sdk::storage::PublicUser;

use crate::service::{AuthResponse, AuthService, LoginRequest, RefreshRequest, RegisterRequest, SignedIn};

/// Puts the service into the depot for the handlers below.
struct Inject(Arc<AuthService>);

#[async_trait]
impl Handler for Inject {
    async fn handle(&self, _req: &mut Request, depot: &mut Depot, _res: &mut Response, _ctrl: &mut FlowCtrl) {
        depot.insert_typed(self.0.clone());
    }
}

pub fn router(svc: Arc<AuthService>) -> Router {
    Router::with_path("auth")
        .hoop(Inject(svc))
        .push(Router::with_path("register").post(register))
        .push(Router::with_path("login").post(login))
        .push(Router::with_path("refresh").post(refresh))
        .push(Router::with_path("me").get(me))
        .push(Router::with_path("logout").post(logout))
}

fn service(depot: &Depot) -> Result<Arc<AuthService>, ApiError> {
    depot
        .get_typed::<Arc<AuthService>>()
        .cloned()
        .map_err(|_| ApiError::internal("auth service missing from depot"))
}

fn header(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(ApiError::internal)
}

/// Writes an error; 401s say how to authenticate, as HTTP asks.
fn fail(res: &mut Response, e: ApiError) {
    if e.code == ErrorCode::Unauthorized {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res.render(e);
}

fn no_store(res: &mut Response) {
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn signed_in(svc: &AuthService, res: &mut Response, status: StatusCode, out: SignedIn) -> Result<(), ApiError> {
    res.headers_mut()
        .append(SET_COOKIE, header(&svc.cookie.session(&out.session_id))?);
    no_store(res);
    res.status_code(status);
    res.render(Json(out.body));
    Ok(())
}

/// Create an account.
///
/// Returns a token and sets the session cookie: either authenticates later requests.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    operation_id = "register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created and signed in", body = AuthResponse,
            headers(("Set-Cookie" = String, description = "The session cookie (HttpOnly, SameSite=Lax)"))),
        (status = 400, description = "A field is invalid; `field` names it", body = ApiError),
        (status = 409, description = "The username is taken (compared case-insensitively)", body = ApiError),
        (status = 413, description = "The body is too large", body = ApiError),
    )
)]
#[handler]
pub async fn register(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let result = async {
        let svc = service(depot)?;
        let body: RegisterRequest = json_body(req).await?;
        let out = svc.register(body).await?;
        signed_in(&svc, res, StatusCode::CREATED, out)
    }
    .await;
    if let Err(e) = result {
        fail(res, e);
    }
}

/// Sign in with a username and password.
///
/// Returns a fresh token and sets a fresh session cookie. An unknown username and a wrong
/// password get the same answer.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = AuthResponse,
            headers(("Set-Cookie" = String, description = "The session cookie (HttpOnly, SameSite=Lax)"))),
        (status = 400, description = "A field is missing or too long; `field` names it", body = ApiError),
        (status = 401, description = "Invalid username or password", body = ApiError),
        (status = 413, description = "The body is too large", body = ApiError),
    )
)]
#[handler]
pub async fn login(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let result = async {
        let svc = service(depot)?;
        let body: LoginRequest = json_body(req).await?;
        let out = svc.login(body).await?;
        signed_in(&svc, res, StatusCode::OK, out)
    }
    .await;
    if let Err(e) = result {
        fail(res, e);
    }
}

/// Trade a refresh token for a new token and refresh token.
///
/// The refresh token is spent: presented again within `auth.refresh.grace_secs` it
/// answers the same new pair's refresh token; later, it is taken for a stolen token and
/// revokes its whole login (its tokens, its refresh tokens, and the sockets they opened).
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token and refresh token", body = AuthResponse),
        (status = 400, description = "`refreshToken` is missing", body = ApiError),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = ApiError),
        (status = 413, description = "The body is too large", body = ApiError),
    )
)]
#[handler]
pub async fn refresh(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let result = async {
        let svc = service(depot)?;
        let body: RefreshRequest = json_body(req).await?;
        let out = svc.refresh(body).await?;
        no_store(res);
        res.render(Json(out));
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = result {
        fail(res, e);
    }
}

/// The authenticated user.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    operation_id = "me",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, description = "The caller", body = PublicUser),
        (status = 401, description = "Missing, invalid, expired or revoked credentials", body = ApiError),
    )
)]
#[handler]
pub async fn me(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let result = async {
        let svc = service(depot)?;
        let principal = svc.authenticate(req.headers()).await?;
        let user = svc.me(&principal).await?;
        no_store(res);
        res.render(Json(user));
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = result {
        fail(res, e);
    }
}

/// Sign out.
///
/// Revokes the presented Bearer token (until it would have expired) and deletes the
/// session of the presented cookie, which is cleared.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    operation_id = "logout",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 204, description = "Signed out; the cookie is cleared",
            headers(("Set-Cookie" = String, description = "The session cookie with Max-Age=0"))),
        (status = 401, description = "Missing, invalid, expired or revoked credentials", body = ApiError),
    )
)]
#[handler]
pub async fn logout(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let result = async {
        let svc = service(depot)?;
        svc.logout(req.headers()).await?;
        res.headers_mut().append(SET_COOKIE, header(&svc.cookie.clear())?);
        res.status_code(StatusCode::NO_CONTENT);
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = result {
        fail(res, e);
    }
}

#[cfg(test)]
mod tests {
    use confab_sdk::salvo::test::{ResponseExt, TestClient};
    use confab_sdk::salvo::{Router, Service};
    use serde_json::{Value, json};

    use super::*;
    use crate::service::tests::{cheap_config, fixture};

    fn app() -> Service {
        let f = fixture(cheap_config());
        Service::new(Router::new().push(router(f.svc)))
    }

    const URL: &str = "http://127.0.0.1:5800";

    fn set_cookie(res: &Response) -> String {
        res.headers()
            .get(SET_COOKIE)
            .expect("set-cookie")
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn register_me_logout_round_trip() {
        let app = app();
        let mut res = TestClient::post(format!("{URL}/auth/register"))
            .json(&json!({"username": "alice", "password": "password-1", "displayName": "Alice"}))
            .send(&app)
            .await;
        assert_eq!(res.status_code, Some(StatusCode::CREATED));
        let cookie = set_cookie(&res);
        assert!(
            cookie.starts_with("confab.sid=") && cookie.contains("HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"));
        let body: Value = res.take_json().await.unwrap();
        let token = body["token"].as_str().unwrap().to_owned();
        assert_eq!(body["user"]["username"], "alice");
        assert_eq!(body["user"]["displayName"], "Alice");
        assert!(body["user"]["id"].as_str().is_some());

        let sid = cookie.split(';').next().unwrap().to_owned();
        let mut res = TestClient::get(format!("{URL}/auth/me"))
            .add_header("cookie", &sid, true)
            .send(&app)
            .await;
        assert_eq!(res.status_code, Some(StatusCode::OK));
        assert_eq!(res.take_json::<Value>().await.unwrap()["username"], "alice");

        let res = TestClient::post(format!("{URL}/auth/logout"))
            .bearer_auth(&token)
            .add_header("cookie", &sid, true)
            .send(&app)
            .await;
        assert_eq!(res.status_code, Some(StatusCode::NO_CONTENT));
        assert!(set_cookie(&res).starts_with("confab.sid=; Max-Age=0;"));

        for req in [
            TestClient::get(format!("{URL}/auth/me")).bearer_auth(&token),
            TestClient::get(format!("{URL}/auth/me")).add_header("cookie", &sid, true),
        ] {
            let mut res = req.send(&app).await;
            assert_eq!(res.status_code, Some(StatusCode::UNAUTHORIZED));
            assert_eq!(res.headers().get(WWW_AUTHENTICATE).unwrap(), "Bearer");
            let body: Value = res.take_json().await.unwrap();
            assert_eq!(body["code"], "unauthorized");
        }
    }

    #[tokio::test]
    async fn bad_bodies_are_field_named_400s() {
        let app = app();
        for (body, field) in [
            (json!({"password": "password-1"}), "username"),
            (json!({"username": 5, "password": "password-1"}), "username"),
            (json!({"username": "a b c", "password": "password-1"}), "username"),
            (json!({"username": "abc", "password": "short"}), "password"),
            (
                json!({"username": "abc", "password": "password-1", "displayName": ""}),
                "displayName",
            ),
        ] {
            let mut res = TestClient::post(format!("{URL}/auth/register"))
                .json(&body)
                .send(&app)
                .await;
            assert_eq!(res.status_code, Some(StatusCode::BAD_REQUEST), "{body}");
            let v: Value = res.take_json().await.unwrap();
            assert_eq!(
                (v["code"].as_str(), v["field"].as_str()),
                (Some("validation_failed"), Some(field)),
                "{body}"
            );
        }
        let mut res = TestClient::post(format!("{URL}/auth/login"))
            .raw_json("{")
            .send(&app)
            .await;
        assert_eq!(res.status_code, Some(StatusCode::BAD_REQUEST));
        assert_eq!(res.take_json::<Value>().await.unwrap()["field"], "body");
    }
}
