//! The plugin contract of Confab.
//!
//! A plugin depends on this crate only. It receives a [`plugin::Registrar`] in its one
//! build step and adds routes, hoops, socket middleware and event handlers, OpenAPI
//! fragments, health checks and services through it. Shared services (storage, the
//! realtime emitter, the clock, the authenticator) are looked up by type.

pub mod auth;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod deadlines;
pub mod docs;
pub mod error;
pub mod health;
pub mod http;
pub mod ids;
#[cfg(feature = "socketio")]
pub mod live;
pub mod memory;
pub mod net;
pub mod plugin;
pub mod ratelimit;
pub mod realtime;
pub mod services;
pub mod storage;
pub mod time;

pub use async_trait::async_trait;
pub use futures_util;
pub use salvo;
pub use serde;
pub use serde_json;
pub use tokio;
pub use tracing;
pub use utoipa;

pub use error::{ApiError, ErrorCode};
pub use plugin::{BuildError, Plugin, Registrar};
