//! `/health`: whether the service and its database answer, and on SQLite whether the
//! last write committed (the writer's state, see `crm_store::sqlite::writer`).

use std::sync::Arc;

use crm_core::{Store, StoreError, error_chain};
use poem_openapi::{Enum, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::error::{ApiError, ApiResult, ErrorCode, declare::ANY};

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
    /// Check that the service and its database answer, and that writes commit
    ///
    /// 503 with the reason in `detail` while the database does not answer, or (SQLite)
    /// the writer has stopped or its last commit failed; a write probe then retries
    /// every few seconds and this follows its result.
    #[oai(path = "/health", method = "get", operation_id = "get_health")]
    async fn health(&self) -> ApiResult<Json<Health>, ANY> {
        match self.0.health().await {
            Ok(()) => Ok(Json(Health {
                status: HealthStatus::Ok,
            })),
            Err(StoreError::Unavailable(cause)) => {
                tracing::warn!(reason = %error_chain(cause.as_ref()), "unhealthy");
                // The cause's own message, not its sources: those carry driver details.
                Err(ApiError::new(ErrorCode::Unavailable, format!("unhealthy: {cause}")).into())
            }
            Err(other) => Err(other.into()),
        }
    }
}
