//! The auth plugin: register, login, me, logout; argon2id passwords (bcrypt migrated on
//! login); HS256 JWTs with key rotation and revocation; server-side sessions behind an
//! HttpOnly cookie; and the [`Authenticator`](confab_sdk::auth::Authenticator) that other
//! plugins and the socket handshake use. See `docs/auth.md`.

use std::sync::Arc;

use confab_sdk::auth::{Authenticator, SharedAuthenticator};
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{SharedRefreshStore, SharedRevocationStore, SharedSessionStore};
use confab_sdk::http::CookieOrigins;
use confab_sdk::plugin::EnvAlias;
use confab_sdk::realtime::{Handshake, SharedEmitter};
use confab_sdk::storage::{DeploymentSecret, SharedUserStore};
use confab_sdk::{BuildError, Plugin, Registrar};

pub mod config;
pub mod cookie;
pub mod openapi;
pub mod password;
pub mod routes;
pub mod service;
pub mod socket;
pub mod tokens;
pub mod validate;

pub use config::AuthConfig;
pub use service::AuthService;

pub struct AuthPlugin;

impl Plugin for AuthPlugin {
    type Config = AuthConfig;
    const NAME: &'static str = "auth";
    /// The old backend's secret variable.
    const ENV_ALIASES: &'static [EnvAlias] = &[EnvAlias {
        var: "JWT_SECRET",
        key: &["jwt", "secret"],
    }];

    fn build(&self, config: AuthConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let stores = service::Stores {
            users: reg.require::<SharedUserStore>()?,
            sessions: reg.require::<SharedSessionStore>()?,
            revocations: reg.require::<SharedRevocationStore>()?,
            refresh: reg.require::<SharedRefreshStore>()?,
            clock: reg.require::<SharedClock>()?,
        };
        // No secret configured (refused in production): the storage's deployment secret.
        let generated = if config.uses_generated_secret() {
            let secret = reg.require::<DeploymentSecret>()?;
            tracing::info!("auth: tokens are signed with the deployment secret kept with the storage");
            Some(secret.0)
        } else {
            None
        };
        let secure_cookie = reg.profile().is_production();
        let emitter = reg.require::<SharedEmitter>()?;
        let svc = Arc::new(
            AuthService::new(&config, stores, secure_cookie, generated.as_deref())
                .map_err(BuildError)?
                .with_emitter(emitter)
                .with_cookie_origins(reg.service::<CookieOrigins>().unwrap_or_default()),
        );

        reg.provide::<SharedAuthenticator>(svc.clone())?;
        reg.route(routes::router(svc.clone()));
        let socket_auth = svc.clone();
        reg.socket_middleware(Arc::new(move |hs: Arc<Handshake>| {
            let auth = socket_auth.clone();
            Box::pin(async move { auth.authenticate_socket(&hs.auth, &hs.headers).await.map(Some) })
        }));
        reg.on_event("refresh_token", socket::refresh_token(svc.clone()))?;
        reg.openapi(openapi::document(&svc.cookie.name));
        reg.on_shutdown(move || Box::pin(async move { svc.shutdown().await }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use confab_sdk::clock::OffsetClock;
    use confab_sdk::config::RunProfile;
    use confab_sdk::plugin::{Contributions, DynPlugin};
    use confab_sdk::services::Services;

    use super::*;
    use confab_contract::fakes::{MemRefresh, MemRevocations, MemSessions, MemUsers};

    fn services() -> Services {
        let mut s = Services::default();
        s.provide::<SharedUserStore>(Arc::new(MemUsers::default()), "kernel")
            .unwrap();
        s.provide::<SharedSessionStore>(Arc::new(MemSessions::default()), "kernel")
            .unwrap();
        s.provide::<SharedRevocationStore>(Arc::new(MemRevocations::default()), "kernel")
            .unwrap();
        s.provide::<SharedRefreshStore>(Arc::new(MemRefresh), "kernel").unwrap();
        s.provide::<SharedClock>(Arc::new(OffsetClock::new(0)), "kernel")
            .unwrap();
        s.provide(DeploymentSecret("ab".repeat(32)), "kernel").unwrap();
        s.provide::<SharedEmitter>(Arc::new(NoSockets), "kernel").unwrap();
        s
    }

    /// No sockets anywhere: building needs an emitter, these tests emit nothing.
    struct NoSockets;

    #[confab_sdk::async_trait]
    impl confab_sdk::realtime::Emitter for NoSockets {
        async fn to_user(&self, _: &str, _: &str, _: &serde_json::Value) {}
        async fn to_room(&self, _: &str, _: &str, _: &serde_json::Value) {}
        async fn end_credential(&self, _: &str, _: &confab_sdk::auth::CredentialId, _: &str, _: &str) {}
        fn local_sockets(&self) -> usize {
            0
        }
    }

    #[test]
    fn builds_routes_middleware_openapi_and_the_authenticator() {
        let profile = RunProfile {
            name: "development".into(),
        };
        let mut services = services();
        let mut out = Contributions::default();
        let section = serde_json::json!({"password": {"argon2": {"memory_kib": 64, "iterations": 1}}});
        let parsed = AuthPlugin.parse_config(&section, &profile).unwrap();
        let mut reg = Registrar::new("auth", &profile, &mut services, &mut out);
        DynPlugin::build(&AuthPlugin, &parsed, &mut reg).unwrap();
        assert_eq!(out.routes.len(), 1);
        assert_eq!(out.connect_middleware.len(), 1);
        assert_eq!(out.events.len(), 1, "refresh_token");
        assert_eq!(out.openapi.len(), 1);
        assert!(services.get::<SharedAuthenticator>().is_some());
    }

    #[test]
    fn production_refuses_the_default_secret_at_config_check() {
        let profile = RunProfile {
            name: "production".into(),
        };
        let Err(problems) = AuthPlugin.parse_config(&serde_json::json!({}), &profile) else {
            panic!("the default secret is refused in production");
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "auth.jwt.secret");
    }

    #[test]
    fn missing_services_are_named() {
        let profile = RunProfile {
            name: "development".into(),
        };
        let mut services = Services::default();
        let mut out = Contributions::default();
        let parsed = AuthPlugin.parse_config(&serde_json::json!({}), &profile).unwrap();
        let mut reg = Registrar::new("auth", &profile, &mut services, &mut out);
        let e = DynPlugin::build(&AuthPlugin, &parsed, &mut reg).unwrap_err();
        assert!(e.0.contains("plugin auth") && e.0.contains("UserStore"), "{e}");
    }
}
