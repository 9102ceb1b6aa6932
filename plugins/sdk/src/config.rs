//! Typed configuration sections with every problem reported by key.
//!
//! serde stops at the first error; operators want them all. So a section is checked key
//! by key: unknown keys are found by comparing with the defaults, and each known leaf is
//! deserialized on its own (the defaults with that one leaf replaced).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One problem in the configuration: the full key (`server.port`) and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// What every config section knows about the run it configures.
#[derive(Clone, Debug)]
pub struct RunProfile {
    /// `development` unless `--profile`, `CONFAB_PROFILE` or `NODE_ENV` say otherwise.
    pub name: String,
}

impl RunProfile {
    pub fn is_production(&self) -> bool {
        self.name == "production"
    }
}

/// A typed configuration section. Defaults come from `Default`; `validate` adds the
/// checks types cannot express (ranges, secrets in production).
pub trait Section: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {
    fn validate(&self, _profile: &RunProfile) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

/// The problems of a `backend` key (one of `built`, the backends this build has) and of
/// each backend's own section, named `<backend>.<key>`: the check of a section that
/// selects one of several backends, each owning a subsection.
pub fn backend_problems<'a>(
    backend: &str,
    built: &[&str],
    sections: impl IntoIterator<Item = (&'a str, Vec<ConfigProblem>)>,
) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    if !built.contains(&backend) {
        p.push(ConfigProblem::new(
            "backend",
            format!("expected one of {built:?}, got {backend:?}"),
        ));
    }
    for (name, problems) in sections {
        p.extend(
            problems
                .into_iter()
                .map(|e| ConfigProblem::new(format!("{name}.{}", e.key), e.message)),
        );
    }
    p
}

/// Deserializes `value` into `C`, or returns every problem, each named `prefix.key`.
pub fn parse_section<C: Section>(prefix: &str, value: &Value, profile: &RunProfile) -> Result<C, Vec<ConfigProblem>> {
    let defaults = serde_json::to_value(C::default()).unwrap_or(Value::Object(Map::new()));
    let mut problems = Vec::new();
    let mut path = Vec::new();
    check_keys::<C>(prefix, &defaults, value, &defaults, &mut path, &mut problems);
    let mut merged = defaults.clone();
    merge(&mut merged, value);
    // Put the defaults back where a leaf was bad, so the semantic checks still run on the
    // rest and the operator sees every problem at once.
    for p in &problems {
        let rel = p.key.strip_prefix(prefix).unwrap_or(&p.key).trim_start_matches('.');
        let rel: Vec<String> = rel.split('.').filter(|k| !k.is_empty()).map(str::to_owned).collect();
        match get_path(&defaults, &rel) {
            Some(d) => set_path(&mut merged, &rel, d.clone()),
            None => remove_path(&mut merged, &rel),
        }
    }
    let parsed: C = match serde_path_to_error::deserialize(merged) {
        Ok(c) => c,
        Err(e) => {
            problems.push(ConfigProblem {
                key: join(prefix, &e.path().to_string()),
                message: e.inner().to_string(),
            });
            return Err(problems);
        }
    };
    problems.extend(parsed.validate(profile).into_iter().map(|p| ConfigProblem {
        key: join(prefix, &p.key),
        message: p.message,
    }));
    if problems.is_empty() { Ok(parsed) } else { Err(problems) }
}

fn get_path<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(root, |cur, k| cur.get(k))
}

fn remove_path(root: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = root;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn check_keys<C: Section>(
    prefix: &str,
    root_defaults: &Value,
    given: &Value,
    defaults: &Value,
    path: &mut Vec<String>,
    problems: &mut Vec<ConfigProblem>,
) {
    match (given, defaults) {
        // An empty default table is an open map: its keys are not known in advance.
        (Value::Object(g), Value::Object(d)) if !d.is_empty() => {
            // Sorted: serde_json's map keeps insertion order when another crate (bson)
            // enables `preserve_order`, and problems must come out in one stable order.
            let mut given: Vec<_> = g.iter().collect();
            given.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in given {
                path.push(k.clone());
                match d.get(k) {
                    Some(dv) => check_keys::<C>(prefix, root_defaults, v, dv, path, problems),
                    None => problems.push(ConfigProblem {
                        key: join(prefix, &path.join(".")),
                        message: format!(
                            "unknown key (expected one of: {})",
                            d.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    }),
                }
                path.pop();
            }
        }
        _ => {
            // A leaf: the defaults with only this value replaced must deserialize.
            let mut probe = root_defaults.clone();
            set_path(&mut probe, path, given.clone());
            if let Err(e) = serde_path_to_error::deserialize::<_, C>(probe) {
                problems.push(ConfigProblem {
                    key: join(prefix, &path.join(".")),
                    message: e.inner().to_string(),
                });
            }
        }
    }
}

fn set_path(root: &mut Value, path: &[String], v: Value) {
    let mut cur = root;
    for k in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(k.clone())
            .or_insert(Value::Null);
    }
    *cur = v;
}

/// Deep merge: tables merge key by key, anything else replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge(bv, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn join(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => prefix.to_owned(),
        _ => format!("{prefix}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Serialize, Deserialize, Default, Debug, Clone)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        size: u32,
        name: String,
    }

    #[derive(Serialize, Deserialize, Default, Debug, Clone)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        port: u16,
        inner: Inner,
        tags: Vec<String>,
    }

    impl Section for Demo {
        fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
            if self.port == 1 {
                return vec![ConfigProblem {
                    key: "port".into(),
                    message: "must not be 1".into(),
                }];
            }
            vec![]
        }
    }

    fn profile() -> RunProfile {
        RunProfile {
            name: "development".into(),
        }
    }

    #[test]
    fn reports_every_bad_key_with_its_path() {
        let given = json!({"port": "high", "prot": 1, "inner": {"size": -3, "nmae": "x"}});
        let problems = parse_section::<Demo>("server", &given, &profile()).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["server.inner.nmae", "server.inner.size", "server.port", "server.prot"]
        );
        assert!(problems[3].message.contains("unknown key"), "{problems:?}");
        assert!(problems[2].message.contains("u16"), "{problems:?}");
    }

    #[test]
    fn merges_over_defaults_and_runs_semantic_checks() {
        let d: Demo = parse_section("s", &json!({"inner": {"size": 3}}), &profile()).unwrap();
        assert_eq!(d.inner.size, 3);
        assert_eq!(d.port, 0);
        let p = parse_section::<Demo>("s", &json!({"port": 1}), &profile()).unwrap_err();
        assert_eq!(
            p,
            vec![ConfigProblem {
                key: "s.port".into(),
                message: "must not be 1".into()
            }]
        );
    }
}
