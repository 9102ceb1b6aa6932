//! The contract suites of the cluster traits. A backend's tests call them with the store,
//! the clock the store expires by, and a way to move that clock forward: the in-process
//! backend advances an `OffsetClock`; a Redis backend, whose keys expire in real time,
//! sleeps. Durations are whole seconds with half-second margins so that both work.

mod presence;
mod ratelimit;
mod sessions;

use std::sync::Arc;

use confab_sdk::futures_util::future::BoxFuture;

pub use presence::presence_store;
pub use ratelimit::ratelimit_store;
pub use sessions::{refresh_store, revocation_store, session_store};

/// Moves the store's time forward by the given milliseconds.
pub type Advance = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;
