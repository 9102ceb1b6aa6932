//! The one place the kernel names its plugins: one line each, behind its Cargo feature
//! (of the plugin's name).

use confab_sdk::plugin::DynPlugin;

macro_rules! plugins {
    ($($name:literal => $plugin:path),* $(,)?) => {
        /// Every plugin compiled into this build, in no particular order (the host orders them).
        pub fn compiled() -> Vec<Box<dyn DynPlugin>> {
            vec![$(
                #[cfg(feature = $name)]
                Box::new($plugin),
            )*]
        }

        /// Every plugin Confab has, compiled in or not: a section for one that is not
        /// compiled is reported as such rather than as an unknown key.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

plugins! {
    "auth" => confab_auth::AuthPlugin,
    "chat" => confab_chat::ChatPlugin,
    "docs" => confab_docs::DocsPlugin,
    "presence" => confab_presence::PresencePlugin,
    "ratelimit" => confab_ratelimit::RateLimitPlugin,
}
