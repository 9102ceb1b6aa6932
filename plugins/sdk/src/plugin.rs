//! The plugin contract: a name, the plugins it needs, a typed config section, and one
//! build step that contributes to the server through a [`Registrar`], a `finish` step once
//! every plugin is built, and shutdown hooks ([`Registrar::on_shutdown`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;
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
    /// Environment variables (of the old backend, say) that set keys of this plugin's
    /// section; read before the config is loaded, below `CONFAB_*` variables.
    const ENV_ALIASES: &'static [EnvAlias] = &[];

    /// Registers what the plugin contributes, with its config parsed and checked once.
    fn build(&self, config: Self::Config, reg: &mut Registrar<'_>) -> Result<(), BuildError>;

    /// Runs after every enabled plugin was built: the place to look up optional services
    /// (whatever the build order), and to hand them to what `build` made (it can provide
    /// a private type of its own to find it again here).
    fn finish(&self, _reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        Ok(())
    }
}

/// A plugin's config section, parsed and checked (the plugin's `Config`, type-erased).
pub type ParsedConfig = Arc<dyn std::any::Any + Send + Sync>;

/// An environment variable that sets one key of a plugin's section.
#[derive(Debug, Clone, Copy)]
pub struct EnvAlias {
    pub var: &'static str,
    /// The key's path inside the section (`["jwt", "secret"]` for `[auth.jwt] secret`).
    pub key: &'static [&'static str],
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
    fn env_aliases(&self) -> &'static [EnvAlias];
    /// The section's defaults, without `enabled` (the kernel owns that key).
    fn default_config(&self) -> Value;
    /// Parses and checks the section (without `enabled`): every problem, or the config
    /// that [`DynPlugin::build`] takes.
    fn parse_config(&self, section: &Value, profile: &RunProfile) -> Result<ParsedConfig, Vec<ConfigProblem>>;
    fn build(&self, config: &ParsedConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError>;
    fn finish(&self, reg: &mut Registrar<'_>) -> Result<(), BuildError>;
}

impl<P: Plugin> DynPlugin for P {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn depends_on(&self) -> &'static [&'static str] {
        P::DEPENDS_ON
    }
    fn env_aliases(&self) -> &'static [EnvAlias] {
        P::ENV_ALIASES
    }
    fn default_config(&self) -> Value {
        serde_json::to_value(P::Config::default()).unwrap_or_default()
    }
    fn parse_config(&self, section: &Value, profile: &RunProfile) -> Result<ParsedConfig, Vec<ConfigProblem>> {
        parse_section::<P::Config>(P::NAME, section, profile).map(|c| Arc::new(c) as ParsedConfig)
    }
    fn build(&self, config: &ParsedConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let config = config
            .downcast_ref::<P::Config>()
            .ok_or_else(|| BuildError(format!("plugin {}: handed another plugin's config", P::NAME)))?;
        Plugin::build(self, config.clone(), reg)
    }
    fn finish(&self, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        Plugin::finish(self, reg)
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
    /// Run over the assembled OpenAPI document, in build order, after every fragment is in.
    pub document_passes: Vec<DocumentPass>,
    /// Response headers browsers may read cross-origin (CORS `Access-Control-Expose-Headers`).
    pub exposed_headers: Vec<&'static str>,
    pub health: Vec<Arc<dyn HealthCheck>>,
    /// Stops a plugin's background work, by plugin name, run once at shutdown.
    pub shutdown: Vec<(&'static str, ShutdownHook)>,
}

/// Stops a plugin's background work (tasks, threads) once the server has stopped serving:
/// it may finish what is queued, within the shutdown deadline the kernel gives it.
pub type ShutdownHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A change to the whole OpenAPI document that no fragment can express (responses added
/// to other plugins' operations, say).
pub type DocumentPass = Arc<dyn Fn(&mut utoipa::openapi::OpenApi) + Send + Sync>;

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
    /// Adds a pass over the assembled document (see [`DocumentPass`]).
    pub fn document_pass(&mut self, pass: impl Fn(&mut utoipa::openapi::OpenApi) + Send + Sync + 'static) -> &mut Self {
        self.out.document_passes.push(Arc::new(pass));
        self
    }
    /// Lets browsers read a response header this plugin sends (lower case).
    pub fn expose_header(&mut self, name: &'static str) -> &mut Self {
        if !self.out.exposed_headers.contains(&name) {
            self.out.exposed_headers.push(name);
        }
        self
    }
    /// Runs `hook` at shutdown, after sockets and HTTP have stopped (see [`ShutdownHook`]).
    pub fn on_shutdown(&mut self, hook: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static) -> &mut Self {
        self.out.shutdown.push((self.plugin, Box::new(hook)));
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
