//! The one place the kernel names its plugins: one line each, behind its Cargo feature.

use confab_sdk::plugin::DynPlugin;

/// Every plugin compiled into this build, in no particular order (the host orders them).
pub fn compiled() -> Vec<Box<dyn DynPlugin>> {
    #[allow(unused_mut)]
    let mut plugins: Vec<Box<dyn DynPlugin>> = Vec::new();
    #[cfg(feature = "auth")]
    plugins.push(Box::new(confab_auth::AuthPlugin));
    #[cfg(feature = "chat")]
    plugins.push(Box::new(confab_chat::ChatPlugin));
    #[cfg(feature = "docs")]
    plugins.push(Box::new(confab_docs::DocsPlugin));
    plugins
}
