//! The docs plugin: serves the OpenAPI document the kernel assembled from the fragments
//! of the enabled plugins, so a disabled plugin's paths are absent.

use confab_sdk::config::Section;
use confab_sdk::docs::ApiDocument;
use confab_sdk::salvo::prelude::*;
use confab_sdk::{ApiError, BuildError, Plugin, Registrar};
use serde::{Deserialize, Serialize};

pub struct DocsPlugin;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocsConfig {}

impl Section for DocsConfig {}

impl Plugin for DocsPlugin {
    type Config = DocsConfig;
    const NAME: &'static str = "docs";

    fn build(&self, _config: DocsConfig, reg: &mut Registrar<'_>) -> Result<(), BuildError> {
        let doc: ApiDocument = reg.require()?;
        reg.route(Router::with_path("openapi.json").get(OpenApiJson(doc)));
        Ok(())
    }
}

struct OpenApiJson(ApiDocument);

#[async_trait]
impl Handler for OpenApiJson {
    async fn handle(&self, _req: &mut Request, _depot: &mut Depot, res: &mut Response, _ctrl: &mut FlowCtrl) {
        match self.0.get() {
            Some(doc) => res.render(Json(doc)),
            None => res.render(ApiError::unavailable("the API document is still being assembled")),
        }
    }
}
