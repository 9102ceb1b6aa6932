//! The `[docs]` section.

use confab_sdk::config::{ConfigProblem, RunProfile, Section};
use serde::{Deserialize, Serialize};

/// Which UI `/docs` renders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ui {
    /// Swagger UI: browse and try the REST API ("Authorize" takes the Bearer token).
    #[default]
    Swagger,
    /// Redoc: a read-only three-panel reference.
    Redoc,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocsConfig {
    /// The title of both documents and of the `/docs` page.
    pub title: String,
    /// The UI of `/docs`: `swagger` or `redoc`.
    pub ui: Ui,
    /// Where the browser loads the UI's files from: the base URL of the pinned npm package
    /// (`swagger-ui-dist` or `redoc`, see docs/api-docs.md), or a path on this origin.
    /// Empty: the jsDelivr CDN. The files are checked by Subresource Integrity, so a mirror
    /// must serve the same version byte for byte.
    pub assets_url: String,
    /// The public base URL of this server (`https://chat.example.com`), put in both
    /// documents' `servers`. Empty: the OpenAPI document uses relative URLs and the
    /// AsyncAPI document a `{host}` variable.
    pub public_url: String,
}

impl Default for DocsConfig {
    fn default() -> Self {
        DocsConfig {
            title: "Confab".into(),
            ui: Ui::default(),
            assets_url: String::new(),
            public_url: String::new(),
        }
    }
}

fn problem(key: &str, message: &str) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

/// An `http(s)://host[:port][/path]` URL with nothing that could break out of an HTML
/// attribute or a CSP source list (the values end up in both).
pub(crate) fn is_base_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")) else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    !host.is_empty() && safe_chars(s)
}

fn safe_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:/@%+".contains(&b))
}

impl Section for DocsConfig {
    fn validate(&self, _: &RunProfile) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.title.trim().is_empty() || self.title.chars().count() > 200 {
            p.push(problem("title", "expected 1 to 200 characters"));
        }
        let a = &self.assets_url;
        let local_path = a.starts_with('/') && !a.starts_with("//") && safe_chars(a);
        if !a.is_empty() && !is_base_url(a) && !local_path {
            p.push(problem(
                "assets_url",
                "expected an http(s) URL or an absolute path such as /static/swagger-ui",
            ));
        }
        if !self.public_url.is_empty() && !is_base_url(&self.public_url) {
            p.push(problem(
                "public_url",
                "expected an http(s) URL without query or fragment, such as https://chat.example.com",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use confab_sdk::config::parse_section;
    use serde_json::json;

    use super::*;

    fn check(v: serde_json::Value) -> Vec<String> {
        let profile = RunProfile {
            name: "development".into(),
        };
        match parse_section::<DocsConfig>("docs", &v, &profile) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(check(json!({})).is_empty());
        assert!(
            check(json!({"ui": "redoc", "assets_url": "/static/redoc", "public_url": "https://chat.example.com/api"}))
                .is_empty()
        );
        assert!(check(json!({"assets_url": "https://mirror.example.com/npm/swagger-ui-dist@5.35.0"})).is_empty());
        assert_eq!(check(json!({"ui": "scalar"})), ["docs.ui"]);
        assert_eq!(check(json!({"title": " "})), ["docs.title"]);
        for bad in [
            "javascript:alert(1)",
            "//evil.example",
            "https://x.example/\" onload=\"x",
            "https://a; script-src *",
        ] {
            assert_eq!(check(json!({"assets_url": bad})), ["docs.assets_url"], "{bad}");
        }
        assert_eq!(check(json!({"public_url": "chat.example.com"})), ["docs.public_url"]);
        assert_eq!(
            check(json!({"public_url": "https://chat.example.com/?a=1"})),
            ["docs.public_url"]
        );
    }
}
