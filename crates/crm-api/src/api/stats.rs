//! `/api/stats`: load figures for supervisors.

use std::sync::Arc;

use crm_core::Store;
use poem_openapi::{OpenApi, payload::Json};

use super::ApiTags;
use crate::{
    auth::Credentials,
    dto::{OperatorStats, list},
    error::{ApiResult, declare::API},
};

/// Statistics endpoints over a store.
pub(crate) struct StatsApi<S>(pub(crate) Arc<S>);

#[OpenApi(tag = "ApiTags::Stats")]
impl<S: Store> StatsApi<S> {
    /// Each operator's limit, open and total contacts, by operator id
    #[oai(
        path = "/api/stats/operators",
        method = "get",
        operation_id = "get_operator_stats"
    )]
    async fn operators(&self, _auth: Credentials) -> ApiResult<Json<Vec<OperatorStats>>, API> {
        Ok(Json(list(self.0.operator_stats().await?)))
    }
}
