//! The API document assembled by the kernel from the enabled plugins' fragments, shared
//! with the docs plugin (which is built before the document is complete).

use std::sync::{Arc, OnceLock};

use utoipa::openapi::OpenApi;

#[derive(Clone, Default)]
pub struct ApiDocument(Arc<OnceLock<OpenApi>>);

impl ApiDocument {
    /// The finished document; `None` only while plugins are still being built.
    pub fn get(&self) -> Option<&OpenApi> {
        self.0.get()
    }
    /// Called once by the kernel after every plugin is built.
    pub fn set(&self, doc: OpenApi) {
        let _ = self.0.set(doc);
    }
}
