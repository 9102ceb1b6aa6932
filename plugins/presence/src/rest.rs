//! `GET /users/{id}/presence`.

use confab_sdk::ApiError;
use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::ids::is_id;
use confab_sdk::salvo::prelude::*;
use confab_sdk::storage::SharedUserStore;
use std::sync::Arc;

use crate::service::Presence;

pub(crate) fn router(presence: Arc<Presence>, auth: SharedAuthenticator, users: SharedUserStore) -> Router {
    Router::with_path("users/{id}/presence").get(GetPresence { presence, auth, users })
}

struct GetPresence {
    presence: Arc<Presence>,
    auth: SharedAuthenticator,
    users: SharedUserStore,
}

impl GetPresence {
    async fn answer(&self, req: &Request) -> Result<confab_sdk::cluster::PresenceState, ApiError> {
        self.auth.authenticate(req.headers()).await?;
        let id = req.param::<String>("id").unwrap_or_default();
        // Any authenticated user may see anyone's presence; an id that is no user is a 404.
        if !is_id(&id) {
            return Err(ApiError::not_found("no such user"));
        }
        let id = id.to_ascii_lowercase();
        if self.users.user_by_id(&id).await?.is_none() {
            return Err(ApiError::not_found("no such user"));
        }
        let mut states = self.presence.store.states(std::slice::from_ref(&id)).await?;
        states
            .pop()
            .ok_or_else(|| ApiError::internal("presence store answered no state"))
    }
}

#[async_trait]
impl Handler for GetPresence {
    async fn handle(&self, req: &mut Request, _: &mut Depot, res: &mut Response, _: &mut FlowCtrl) {
        match self.answer(req).await {
            Ok(state) => {
                // Presence changes all the time: never from a cache.
                res.headers_mut().insert(
                    "cache-control",
                    confab_sdk::salvo::http::HeaderValue::from_static("no-store"),
                );
                res.render(Json(state));
            }
            Err(e) => res.render(e),
        }
    }
}
