//! The presence plugin: who is online (at least one socket on any node), when they were
//! last seen, and live updates for subscribers. `GET /users/{id}/presence`, the
//! `subscribe_presence` / `unsubscribe_presence` socket events and `presence` events.
//! The state lives in the cluster's `PresenceStore`; see `docs/cluster.md`.

mod config;
mod input;
mod openapi;
mod rest;
mod service;
mod socket;

use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::cluster::SharedPresenceStore;
use confab_sdk::realtime::SharedEmitter;
use confab_sdk::storage::SharedUserStore;
use confab_sdk::{BuildError, Plugin, Registrar};

pub use config::PresenceConfig;
pub use input::SubscribePresenceRequest;
pub use service::presence_room;

pub struct PresencePlugin;

impl Plugin for PresencePlugin {
    type Config = PresenceConfig;
    const NAME: &'static str = "presence";
    const DEPENDS_ON: &'static [&'static str] = &["auth"];

    fn build(&self, config: PresenceConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let store: SharedPresenceStore = reg.require()?;
        let emitter: SharedEmitter = reg.require()?;
        let auth: SharedAuthenticator = reg.require()?;
        let users: SharedUserStore = reg.require()?;
        reg.openapi(openapi::fragment(&config));
        let presence = service::Presence::new(store, emitter, config);
        // The lanes and the heartbeat start now when a runtime is there (serving), else
        // with the first socket.
        if confab_sdk::tokio::runtime::Handle::try_current().is_ok() {
            presence.start();
        }
        reg.route(rest::router(presence.clone(), auth, users));
        reg.on_connect(socket::on_connect(presence.clone()));
        reg.on_disconnect(socket::on_disconnect(presence.clone()));
        reg.on_event("subscribe_presence", socket::subscribe(presence.clone()))?;
        reg.on_event("unsubscribe_presence", socket::unsubscribe(presence.clone()))?;
        reg.on_shutdown(move || Box::pin(async move { presence.shutdown().await }));
        Ok(())
    }
}
