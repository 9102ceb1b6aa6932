//! The `/docs` page: Swagger UI or Redoc, loaded from a CDN at a pinned version with
//! Subresource Integrity (nothing vendored), and the Content-Security-Policy that allows
//! exactly what that page needs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::config::{DocsConfig, Ui};

/// One file of the UI's npm package, with its SRI hash (sha384 of the published file,
/// which jsDelivr serves unchanged). Bumping a version means updating these hashes:
/// `tests/docs/validate.sh` checks them against the npm registry.
struct Asset {
    path: &'static str,
    integrity: &'static str,
}

const SWAGGER_CDN: &str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0";
const SWAGGER_JS: Asset = Asset {
    path: "swagger-ui-bundle.js",
    integrity: "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
};
const SWAGGER_CSS: Asset = Asset {
    path: "swagger-ui.css",
    integrity: "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
};
const REDOC_CDN: &str = "https://cdn.jsdelivr.net/npm/redoc@2.5.4";
const REDOC_JS: Asset = Asset {
    path: "bundles/redoc.standalone.js",
    integrity: "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
};

/// Starts Swagger UI on the document next to the page. Relative, so a path prefix added by
/// a reverse proxy keeps working. Allowed by its hash in the CSP, not by 'unsafe-inline'.
const SWAGGER_INIT: &str = r##"window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({ url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});"##;

/// The rendered page and its Content-Security-Policy.
pub(crate) struct Page {
    pub html: String,
    pub csp: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The CSP source for files under `base`: its origin, or 'self' for a local path.
fn source_of(base: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()),
        None => "'self'".to_owned(),
    }
}

fn tag(base: &str, asset: &Asset, css: bool) -> String {
    let url = format!("{}/{}", base.trim_end_matches('/'), asset.path);
    if css {
        format!(
            r#"<link rel="stylesheet" href="{url}" integrity="{}" crossorigin="anonymous">"#,
            asset.integrity
        )
    } else {
        format!(
            r#"<script src="{url}" integrity="{}" crossorigin="anonymous"></script>"#,
            asset.integrity
        )
    }
}

pub(crate) fn page(config: &DocsConfig) -> Page {
    let title = escape(&config.title);
    let (default_base, assets) = match config.ui {
        Ui::Swagger => (SWAGGER_CDN, [&SWAGGER_CSS, &SWAGGER_JS].as_slice()),
        Ui::Redoc => (REDOC_CDN, [&REDOC_JS].as_slice()),
    };
    let base = if config.assets_url.is_empty() {
        default_base
    } else {
        config.assets_url.as_str()
    };
    let assets_src = source_of(base);
    // "Try it out" sends requests to the document's server: this origin, or `public_url`'s.
    let mut connect = "'self'".to_owned();
    if !config.public_url.is_empty() {
        let public = source_of(&config.public_url);
        connect = format!("{connect} {public}");
    }
    let common = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    match config.ui {
        Ui::Swagger => {
            let hash = STANDARD.encode(Sha256::digest(SWAGGER_INIT.as_bytes()));
            let html = format!(
                "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
                 <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
                 {css}\n</head>\n<body>\n<div id=\"swagger-ui\"></div>\n{js}\n<script>{SWAGGER_INIT}</script>\n\
                 </body>\n</html>\n",
                css = tag(base, assets[0], true),
                js = tag(base, assets[1], false),
            );
            // Checked in Chromium: Swagger UI styles only through its stylesheet and the
            // DOM's style properties (which CSP allows), and its CSS embeds data: images.
            let csp = format!(
                "{common}; script-src {assets_src} 'sha256-{hash}'; style-src {assets_src}; \
                 img-src data:; connect-src {connect}"
            );
            Page { html, csp }
        }
        Ui::Redoc => {
            let html = format!(
                "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
                 <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
                 </head>\n<body>\n<redoc spec-url=\"openapi.json\"></redoc>\n{js}\n</body>\n</html>\n",
                js = tag(base, assets[0], false),
            );
            // Checked in Chromium: Redoc injects its styles as <style> elements and runs its
            // search index in a worker started from a blob: URL. Its footer logo, loaded from
            // redoc.ly, stays blocked.
            let csp = format!(
                "{common}; script-src {assets_src}; style-src 'unsafe-inline'; img-src data:; \
                 worker-src blob:; connect-src {connect}"
            );
            Page { html, csp }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swagger_page_pins_its_assets_and_allows_only_its_inline_script() {
        let p = page(&DocsConfig {
            title: "Acme <chat>".into(),
            ..DocsConfig::default()
        });
        assert!(p.html.contains("<title>Acme &lt;chat&gt;</title>"));
        assert!(p.html.contains(&format!(
            r#"<script src="{SWAGGER_CDN}/swagger-ui-bundle.js" integrity="{}" crossorigin="anonymous">"#,
            SWAGGER_JS.integrity
        )));
        assert!(p.html.contains(&format!("<script>{SWAGGER_INIT}</script>")));
        assert!(p.csp.starts_with("default-src 'none'"));
        assert!(p.csp.contains("script-src https://cdn.jsdelivr.net 'sha256-"));
        assert!(
            !p.csp.contains("unsafe-eval") && !p.csp.contains("unsafe-inline"),
            "{}",
            p.csp
        );
        assert!(p.csp.contains("connect-src 'self'"));
        // Any other inline script is not allowed: the hash is of this exact text.
        let hash = STANDARD.encode(Sha256::digest(b"alert(1)"));
        assert!(!p.csp.contains(&hash));
    }

    #[test]
    fn redoc_and_self_hosted_assets() {
        let p = page(&DocsConfig {
            ui: Ui::Redoc,
            assets_url: "/static/redoc/".into(),
            public_url: "https://chat.example.com/api".into(),
            ..DocsConfig::default()
        });
        assert!(
            p.html
                .contains(r#"<script src="/static/redoc/bundles/redoc.standalone.js""#),
            "{}",
            p.html
        );
        assert!(p.html.contains(r#"<redoc spec-url="openapi.json">"#));
        assert!(p.csp.contains("script-src 'self';"), "{}", p.csp);
        assert!(p.csp.contains("worker-src blob:"));
        assert!(
            p.csp.contains("connect-src 'self' https://chat.example.com"),
            "{}",
            p.csp
        );
        assert!(!p.html.contains("<script>"), "no inline script");
    }
}
