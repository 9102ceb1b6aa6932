//! Configuration: layers merged with figment, then checked section by section so that a
//! bad file yields one line per problem, each naming its key.
//!
//! Layers, later wins: built-in defaults < `config/default.toml` (or `--config FILE`) <
//! `config/<profile>.toml` < the old backend's variables (`PORT`, `MONGO_URI`,
//! `REDIS_URL`, `JWT_SECRET`) < `CONFAB_*` variables (`CONFAB_SERVER__PORT=4000`).

pub mod kernel;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use confab_sdk::config::{ConfigProblem, RunProfile, merge, parse_section};
use confab_sdk::plugin::{DynPlugin, ParsedConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde_json::{Map, Value};

pub use crate::cluster::ClusterConfig;
pub use crate::storage::StorageConfig;
pub use kernel::{LogConfig, ServerConfig};

/// Where to read configuration from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--config FILE`; else `config/default.toml` when it exists.
    pub file: Option<PathBuf>,
    /// `--profile`; else `CONFAB_PROFILE`, else `production` if `NODE_ENV=production`.
    pub profile: Option<String>,
}

/// A checked configuration.
pub struct Config {
    pub profile: RunProfile,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    /// Each compiled plugin's section (without `enabled`) and whether it is enabled.
    pub plugins: BTreeMap<&'static str, PluginSection>,
    /// The merged configuration with every default filled in (for `config show`).
    pub merged: Value,
}

#[derive(Clone)]
pub struct PluginSection {
    pub enabled: bool,
    /// The section parsed by its plugin (`None` only in a config with problems, which is
    /// never returned).
    pub parsed: Option<ParsedConfig>,
}

impl std::fmt::Debug for PluginSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSection")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

const KERNEL_SECTIONS: &[&str] = &["server", "log", "storage", "cluster"];

/// Loads every layer and checks the result against the kernel's and the plugins' sections.
pub fn load(sources: &Sources, plugins: &[Box<dyn DynPlugin>]) -> Result<Config, Vec<ConfigProblem>> {
    let profile = RunProfile {
        name: profile_name(sources),
    };
    // A misspelt `production` would otherwise run quietly with development rules (the
    // default JWT secret accepted, cookies without Secure).
    let known = ["development", "production"].contains(&profile.name.as_str());
    if !known && !Path::new("config").join(format!("{}.toml", profile.name)).is_file() {
        return Err(vec![problem(
            "profile",
            format!(
                "expected development, production, or a profile with a config/<name>.toml file; got {:?}",
                profile.name
            ),
        )]);
    }
    let given = read_layers(sources, &profile, plugins)?;
    let Value::Object(given) = given else {
        return Err(vec![problem("", "the configuration must be a table")]);
    };
    let mut problems = Vec::new();
    for key in given.keys() {
        if KERNEL_SECTIONS.contains(&key.as_str()) || plugins.iter().any(|p| p.name() == key) {
            continue;
        }
        let message = if crate::plugins::ALL.contains(&key.as_str()) {
            "this plugin is not compiled into this build (enable its Cargo feature)".to_owned()
        } else {
            let mut known: Vec<&str> = KERNEL_SECTIONS.to_vec();
            known.extend(plugins.iter().map(|p| p.name()));
            format!("unknown section (expected one of: {})", known.join(", "))
        };
        problems.push(problem(key, message));
    }
    let empty = Value::Object(Map::new());
    let section = |name: &str| given.get(name).unwrap_or(&empty);
    let server = collect(
        parse_section::<ServerConfig>("server", section("server"), &profile),
        &mut problems,
    );
    let log = collect(
        parse_section::<LogConfig>("log", section("log"), &profile),
        &mut problems,
    );
    let storage = collect(
        parse_section::<StorageConfig>("storage", section("storage"), &profile),
        &mut problems,
    );
    let cluster = collect(
        parse_section::<ClusterConfig>("cluster", section("cluster"), &profile),
        &mut problems,
    );

    let mut merged = Map::new();
    for (name, value) in [
        ("server", to_value(&server)),
        ("log", to_value(&log)),
        ("storage", to_value(&storage)),
        ("cluster", to_value(&cluster)),
    ] {
        merged.insert(name.to_owned(), value);
    }
    let mut sections = BTreeMap::new();
    for plugin in plugins {
        let mut given_section = section(plugin.name()).clone();
        let enabled = match given_section.as_object_mut().and_then(|m| m.remove("enabled")) {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                problems.push(problem(
                    &format!("{}.enabled", plugin.name()),
                    format!("expected true or false, got {other}"),
                ));
                true
            }
        };
        if !given_section.is_object() {
            problems.push(problem(plugin.name(), "expected a table"));
            continue;
        }
        let parsed = match plugin.parse_config(&given_section, &profile) {
            Ok(c) => Some(c),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        let mut full = plugin.default_config();
        merge(&mut full, &given_section);
        let mut shown = Map::new();
        shown.insert("enabled".into(), Value::Bool(enabled));
        if let Value::Object(m) = &full {
            shown.extend(m.clone());
        }
        merged.insert(plugin.name().to_owned(), Value::Object(shown));
        sections.insert(plugin.name(), PluginSection { enabled, parsed });
    }
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        return Err(problems);
    }
    Ok(Config {
        profile,
        server: server.unwrap_or_default(),
        log: log.unwrap_or_default(),
        storage: storage.unwrap_or_default(),
        cluster: cluster.unwrap_or_default(),
        plugins: sections,
        merged: Value::Object(merged),
    })
}

fn collect<T>(r: Result<T, Vec<ConfigProblem>>, problems: &mut Vec<ConfigProblem>) -> Option<T> {
    r.map_err(|p| problems.extend(p)).ok()
}

fn to_value<T: serde::Serialize>(v: &Option<T>) -> Value {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null)
}

fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn profile_name(sources: &Sources) -> String {
    if let Some(p) = &sources.profile {
        return p.clone();
    }
    if let Ok(p) = std::env::var("CONFAB_PROFILE") {
        return p;
    }
    match std::env::var("NODE_ENV").as_deref() {
        Ok("production") => "production".into(),
        _ => "development".into(),
    }
}

/// Reads the files and variables into one JSON tree (only what was given, no defaults).
fn read_layers(
    sources: &Sources,
    profile: &RunProfile,
    plugins: &[Box<dyn DynPlugin>],
) -> Result<Value, Vec<ConfigProblem>> {
    let mut figment = Figment::new();
    match &sources.file {
        Some(file) => {
            if !file.is_file() {
                return Err(vec![problem(
                    "--config",
                    format!("expected a readable TOML file, but {} does not exist", file.display()),
                )]);
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        None if Path::new("config/default.toml").is_file() => {
            figment = figment.merge(Toml::file_exact("config/default.toml"))
        }
        None => {}
    }
    let profile_file = Path::new("config").join(format!("{}.toml", profile.name));
    if profile_file.is_file() {
        figment = figment.merge(Toml::file_exact(profile_file));
    }
    figment = figment.merge(Serialized::defaults(alias_layer(plugins)));
    figment = figment.merge(Env::prefixed("CONFAB_").split("__").filter(|k| {
        let k = k.as_str().to_ascii_lowercase();
        k != "profile" && !k.starts_with("test_")
    }));
    let mut value: Value = match figment.extract::<Value>() {
        Ok(v) => v,
        Err(errors) => {
            return Err(errors
                .into_iter()
                .map(|e| {
                    let source = e
                        .metadata
                        .as_ref()
                        .and_then(|m| m.source.as_ref())
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    problem(
                        &e.path.join("."),
                        format!(
                            "{} {}",
                            e.kind,
                            if source.is_empty() {
                                String::new()
                            } else {
                                format!("(in {source})")
                            }
                        )
                        .trim(),
                    )
                })
                .collect());
        }
    };
    if value.is_null() {
        value = Value::Object(Map::new());
    }
    Ok(value)
}

/// The old backend's environment variables (the kernel's, and those plugins declare),
/// mapped onto our keys.
fn alias_layer(plugins: &[Box<dyn DynPlugin>]) -> Value {
    let mut out = Value::Object(Map::new());
    let mut set = |path: &[&str], v: Value| {
        let mut tree = v;
        for k in path.iter().rev() {
            let mut m = Map::new();
            m.insert((*k).to_owned(), tree);
            tree = Value::Object(m);
        }
        merge(&mut out, &tree);
    };
    if let Ok(port) = std::env::var("PORT") {
        set(
            &["server", "port"],
            port.parse::<u64>().map(Value::from).unwrap_or(Value::String(port)),
        );
    }
    // In the old backend these variables were how MongoDB and Redis got used at all, so
    // each also selects its backend (a `CONFAB_*__BACKEND` variable still wins).
    if let Ok(uri) = std::env::var("MONGO_URI") {
        set(&["storage", "backend"], Value::from("mongodb"));
        set(&["storage", "mongodb", "uri"], Value::String(uri));
    }
    if let Ok(url) = std::env::var("REDIS_URL") {
        set(&["cluster", "backend"], Value::from("redis"));
        set(&["cluster", "redis", "url"], Value::String(url));
    }
    for plugin in plugins {
        for alias in plugin.env_aliases() {
            if let Ok(v) = std::env::var(alias.var) {
                let path: Vec<&str> = std::iter::once(plugin.name())
                    .chain(alias.key.iter().copied())
                    .collect();
                set(&path, Value::String(v));
            }
        }
    }
    out
}

/// The merged configuration as TOML with secrets masked.
pub fn show(config: &Config) -> String {
    let mut v = config.merged.clone();
    mask(&mut v, "");
    let body = toml::to_string_pretty(&v).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!("# profile: {}\n{body}", config.profile.name)
}

fn mask(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => m.iter_mut().for_each(|(k, v)| mask(v, k)),
        Value::Array(a) => a.iter_mut().for_each(|v| mask(v, key)),
        Value::String(s) => {
            let lower = key.to_ascii_lowercase();
            if lower.contains("secret") || lower.contains("password") {
                *s = "********".into();
            } else if (lower == "uri" || lower == "url")
                && let Some((scheme, rest)) = s.split_once("://")
                && let Some((_, host)) = rest.split_once('@')
            {
                *s = format!("{scheme}://********@{host}");
            }
        }
        _ => {}
    }
}
