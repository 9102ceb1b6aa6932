//! The plugin host: orders the enabled plugins by their dependencies and builds them.

use confab_sdk::plugin::{Contributions, DynPlugin, Registrar};
use confab_sdk::services::Services;

use crate::config::Config;

/// Why the plugins cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("plugin `{plugin}` needs plugin `{needs}`, which is disabled ([{needs}] enabled = false)")]
    DependencyDisabled { plugin: &'static str, needs: &'static str },
    #[error("plugin `{plugin}` needs plugin `{needs}`, which is not compiled into this build")]
    DependencyMissing { plugin: &'static str, needs: &'static str },
    #[error("plugins depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("plugin `{plugin}` failed to build: {message}")]
    Build { plugin: &'static str, message: String },
}

/// The enabled plugins in build order: each after the plugins it depends on.
pub fn plan<'p>(config: &Config, plugins: &'p [Box<dyn DynPlugin>]) -> Result<Vec<&'p dyn DynPlugin>, HostError> {
    let enabled = |name: &str| config.plugins.get(name).is_some_and(|s| s.enabled);
    let active: Vec<&dyn DynPlugin> = plugins
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| enabled(p.name()))
        .collect();
    for p in &active {
        for &needs in p.depends_on() {
            if !plugins.iter().any(|q| q.name() == needs) {
                return Err(HostError::DependencyMissing {
                    plugin: p.name(),
                    needs,
                });
            }
            if !enabled(needs) {
                return Err(HostError::DependencyDisabled {
                    plugin: p.name(),
                    needs,
                });
            }
        }
    }
    // Kahn's algorithm, stable by name so the order does not depend on registration order.
    let mut remaining = active;
    remaining.sort_by_key(|p| p.name());
    let mut ordered: Vec<&dyn DynPlugin> = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|p| p.depends_on().iter().all(|d| ordered.iter().any(|o| o.name() == *d)));
        match ready {
            Some(i) => ordered.push(remaining.remove(i)),
            None => {
                return Err(HostError::Cycle(
                    remaining.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
                ));
            }
        }
    }
    Ok(ordered)
}

/// Builds the enabled plugins in order (later plugins see the services earlier ones
/// provided), then finishes each of them.
pub fn build(
    config: &Config,
    plugins: &[Box<dyn DynPlugin>],
    services: &mut Services,
) -> Result<(Contributions, Vec<&'static str>), HostError> {
    let order = plan(config, plugins)?;
    let mut out = Contributions::default();
    let mut names = Vec::with_capacity(order.len());
    for plugin in &order {
        let Some(parsed) = &config.plugins[plugin.name()].parsed else {
            return Err(HostError::Build {
                plugin: plugin.name(),
                message: "its config section was not parsed".into(),
            });
        };
        let mut reg = Registrar::new(plugin.name(), &config.profile, services, &mut out);
        plugin.build(parsed, &mut reg).map_err(|e| HostError::Build {
            plugin: plugin.name(),
            message: e.0,
        })?;
        names.push(plugin.name());
    }
    // Every plugin is built: each may now look up what the others provided.
    for plugin in &order {
        let mut reg = Registrar::new(plugin.name(), &config.profile, services, &mut out);
        plugin.finish(&mut reg).map_err(|e| HostError::Build {
            plugin: plugin.name(),
            message: e.0,
        })?;
    }
    Ok((out, names))
}
