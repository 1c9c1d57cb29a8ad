//! `/health`: whether the service and its database answer.

use std::sync::Arc;

use crm_core::Store;
use poem_openapi::{Enum, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::error::ApiResult;

/// The health endpoint over a store.
pub(crate) struct HealthApi<S>(pub(crate) Arc<S>);

/// Always `{"status": "ok"}`, as in the original service.
#[derive(Debug, Object)]
struct Health {
    status: HealthStatus,
}

/// The one status a healthy service reports.
#[derive(Debug, Enum)]
#[oai(rename_all = "lowercase")]
enum HealthStatus {
    /// The database answers.
    Ok,
}

#[OpenApi(tag = "ApiTags::Health")]
impl<S: Store> HealthApi<S> {
    /// Check that the service and its database answer
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> ApiResult<Json<Health>> {
        self.0.health().await?;
        Ok(Json(Health {
            status: HealthStatus::Ok,
        }))
    }
}
