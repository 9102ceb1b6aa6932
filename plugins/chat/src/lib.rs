//! The chat plugin: messages (Socket.IO `send_message` and `POST /chats/{userId}/send`),
//! history, conversations, read receipts, typing and reconnect `sync`. See `docs/chat.md`.

mod config;
mod input;
mod lanes;
mod openapi;
mod rest;
mod service;
mod socket;

use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::realtime::SharedEmitter;
use confab_sdk::storage::SharedMessageStore;
use confab_sdk::{BuildError, Plugin, Registrar};

pub use config::ChatConfig;
pub use input::{FetchHistoryRequest, MarkReadRequest, SendMessageRequest, SyncRequest, TypingRequest};

pub struct ChatPlugin;

impl Plugin for ChatPlugin {
    type Config = ChatConfig;
    const NAME: &'static str = "chat";
    const DEPENDS_ON: &'static [&'static str] = &["auth"];

    fn build(&self, config: ChatConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let messages: SharedMessageStore = reg.require()?;
        let emitter: SharedEmitter = reg.require()?;
        let auth: SharedAuthenticator = reg.require()?;
        reg.openapi(openapi::fragment(&config));
        let typing_enabled = config.typing_enabled;
        let chat = service::Chat::new(messages, emitter, config);
        reg.route(rest::router(chat.clone(), auth));
        reg.expose_header(rest::HAS_MORE);
        reg.on_event("send_message", socket::send_message(chat.clone()))?;
        reg.on_event("fetch_history", socket::fetch_history(chat.clone()))?;
        reg.on_event("mark_read", socket::mark_read(chat.clone()))?;
        reg.on_event("sync", socket::sync(chat.clone()))?;
        if typing_enabled {
            reg.on_event("typing", socket::typing(chat))?;
        }
        Ok(())
    }
}
