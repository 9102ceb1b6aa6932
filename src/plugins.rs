//! The one place the kernel names its plugins: one line each, behind its Cargo feature.

use confab_sdk::plugin::DynPlugin;

/// Every plugin compiled into this build, in no particular order (the host orders them).
pub fn compiled() -> Vec<Box<dyn DynPlugin>> {
    vec![
        #[cfg(feature = "auth")]
        Box::new(confab_auth::AuthPlugin),
        #[cfg(feature = "chat")]
        Box::new(confab_chat::ChatPlugin),
        #[cfg(feature = "docs")]
        Box::new(confab_docs::DocsPlugin),
        #[cfg(feature = "presence")]
        Box::new(confab_presence::PresencePlugin),
        #[cfg(feature = "ratelimit")]
        Box::new(confab_ratelimit::RateLimitPlugin),
    ]
}
