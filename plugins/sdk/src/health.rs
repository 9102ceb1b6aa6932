//! Readiness checks contributed by the kernel and plugins; `/ready` runs them all.

use crate::async_trait;

#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// Short name shown in `/ready`'s `checks` object.
    fn name(&self) -> &str;
    /// `Err` carries a message for operators; it is shown in `/ready`.
    async fn check(&self) -> Result<(), String>;
}
