//! The plugin contract: a name, the plugins it needs, a typed config section, and one
//! build step that contributes to the server through a [`Registrar`].

use std::sync::Arc;

use salvo::{Handler, Router};
use serde_json::Value;

use crate::config::{ConfigProblem, RunProfile, Section, parse_section};
use crate::health::HealthCheck;
use crate::realtime::{ConnectMiddleware, EventGuard, EventHandler, SocketHook};
use crate::services::Services;

/// A compile-time plugin. The kernel names each one in a single registration line.
pub trait Plugin: Send + Sync + 'static {
    /// Its `[section]` in the TOML.
    type Config: Section;
    /// Unique name; also the config section and the Cargo feature.
    const NAME: &'static str;
    /// Plugins that must be enabled, and built before this one.
    const DEPENDS_ON: &'static [&'static str] = &[];

    fn build(&self, config: Self::Config, reg: &mut Registrar<'_>) -> Result<(), BuildError>;
}

/// A failure to build: the message says what is wrong and, if it is configuration, which key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl From<String> for BuildError {
    fn from(s: String) -> Self {
        BuildError(s)
    }
}

/// The object-safe face of a plugin, used by the kernel's plugin host.
pub trait DynPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn depends_on(&self) -> &'static [&'static str];
    /// The section's defaults, without `enabled` (the kernel owns that key).
    fn default_config(&self) -> Value;
    fn check_config(&self, section: &Value, profile: &RunProfile) -> Vec<ConfigProblem>;
    fn build(&self, section: &Value, reg: &mut Registrar<'_>) -> Result<(), BuildError>;
}

impl<P: Plugin> DynPlugin for P {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn depends_on(&self) -> &'static [&'static str] {
        P::DEPENDS_ON
    }
    fn default_config(&self) -> Value {
        serde_json::to_value(P::Config::default()).unwrap_or_default()
    }
    fn check_config(&self, section: &Value, profile: &RunProfile) -> Vec<ConfigProblem> {
        parse_section::<P::Config>(P::NAME, section, profile)
            .err()
            .unwrap_or_default()
    }
    fn build(&self, section: &Value, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let config = parse_section::<P::Config>(P::NAME, section, reg.profile())
            .map_err(|p| BuildError(p.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
        Plugin::build(self, config, reg)
    }
}

/// Everything the enabled plugins contributed, collected by the kernel.
#[derive(Default)]
pub struct Contributions {
    pub routes: Vec<Router>,
    pub hoops: Vec<Arc<dyn Handler>>,
    pub connect_middleware: Vec<ConnectMiddleware>,
    pub events: Vec<(String, EventHandler)>,
    pub event_guards: Vec<EventGuard>,
    pub on_connect: Vec<SocketHook>,
    pub on_disconnect: Vec<SocketHook>,
    pub openapi: Vec<utoipa::openapi::OpenApi>,
    pub health: Vec<Arc<dyn HealthCheck>>,
}

/// What a plugin's build step receives.
pub struct Registrar<'a> {
    plugin: &'static str,
    profile: &'a RunProfile,
    services: &'a mut Services,
    out: &'a mut Contributions,
}

impl<'a> Registrar<'a> {
    pub fn new(
        plugin: &'static str,
        profile: &'a RunProfile,
        services: &'a mut Services,
        out: &'a mut Contributions,
    ) -> Self {
        Registrar {
            plugin,
            profile,
            services,
            out,
        }
    }

    pub fn plugin(&self) -> &'static str {
        self.plugin
    }
    pub fn profile(&self) -> &RunProfile {
        self.profile
    }

    /// Adds HTTP routes (a router with its own paths and handlers).
    pub fn route(&mut self, router: Router) -> &mut Self {
        self.out.routes.push(router);
        self
    }
    /// Adds HTTP middleware run on every matched route.
    pub fn hoop<H: Handler>(&mut self, hoop: H) -> &mut Self {
        self.out.hoops.push(Arc::new(hoop));
        self
    }
    /// Adds socket connect middleware (authentication, admission).
    pub fn socket_middleware(&mut self, m: ConnectMiddleware) -> &mut Self {
        self.out.connect_middleware.push(m);
        self
    }
    /// Handles a socket event. Two plugins handling the same event is a build error.
    pub fn on_event(&mut self, event: &str, handler: EventHandler) -> Result<&mut Self, BuildError> {
        if self.out.events.iter().any(|(e, _)| e == event) {
            return Err(BuildError(format!(
                "plugin {}: socket event `{event}` is already handled",
                self.plugin
            )));
        }
        self.out.events.push((event.to_owned(), handler));
        Ok(self)
    }
    /// Adds a guard consulted before every socket event's handler, in build order.
    pub fn event_guard(&mut self, guard: EventGuard) -> &mut Self {
        self.out.event_guards.push(guard);
        self
    }
    pub fn on_connect(&mut self, hook: SocketHook) -> &mut Self {
        self.out.on_connect.push(hook);
        self
    }
    pub fn on_disconnect(&mut self, hook: SocketHook) -> &mut Self {
        self.out.on_disconnect.push(hook);
        self
    }
    /// Adds an OpenAPI fragment (paths, schemas, `x-socket-events` in extensions).
    pub fn openapi(&mut self, doc: utoipa::openapi::OpenApi) -> &mut Self {
        self.out.openapi.push(doc);
        self
    }
    pub fn health_check(&mut self, check: Arc<dyn HealthCheck>) -> &mut Self {
        self.out.health.push(check);
        self
    }
    /// Offers a service to plugins built later. Providing a type twice is an error.
    pub fn provide<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Result<&mut Self, BuildError> {
        self.services.provide(value, self.plugin).map_err(|first| {
            BuildError(format!(
                "plugin {}: {} already provided by {first}",
                self.plugin,
                std::any::type_name::<T>()
            ))
        })?;
        Ok(self)
    }
    pub fn service<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.services.get()
    }
    pub fn require<T: Clone + Send + Sync + 'static>(&self) -> Result<T, BuildError> {
        self.services
            .require()
            .map_err(|e| BuildError(format!("plugin {}: {e}", self.plugin)))
    }
}
