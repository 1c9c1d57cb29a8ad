//! `/api/queue`: the contacts waiting for an operator, per source.

use std::sync::Arc;

use chrono::Utc;
use crm_core::Store;
use poem_openapi::{OpenApi, param::Query};

use super::{ApiTags, default_page_limit, page_after};
use crate::{
    auth::Credentials,
    dto::{Listed, SourceQueue},
    error::{
        ApiResult,
        declare::{API, QUERY},
    },
};

/// Queue endpoints over a store.
pub(crate) struct QueueApi<S>(pub(crate) Arc<S>, pub(crate) crate::QueueSettings);

#[OpenApi(tag = "ApiTags::Queue")]
impl<S: Store> QueueApi<S> {
    /// Per source with contacts waiting, by source id: how many wait, for how long, and how
    /// many longer than the configured longest wait (`CRM_QUEUE_MAX_WAIT`).
    /// The waiting contacts themselves, oldest first, are
    /// `GET /api/contacts?status=open&unassigned=true`.
    #[oai(path = "/api/queue", method = "get", operation_id = "list_queue")]
    async fn list(
        &self,
        /// Page size.
        #[oai(
            default = "default_page_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Only sources with a larger id: the last `source_id` of the previous page.
        after: Query<Option<i64>>,
        _auth: Credentials,
    ) -> ApiResult<Listed<SourceQueue>, { API | QUERY }> {
        let now = Utc::now();
        let queue = self.0.queue(self.1.stale_before(now)).await?;
        let page: Vec<SourceQueue> = page_after(queue, |q| q.source_id.get(), after.0, limit.0)
            .into_iter()
            .map(|q| SourceQueue::at(q, now))
            .collect();
        Ok(Listed::page("/api/queue", &[], limit.0, page, |q| {
            q.source_id
        }))
    }
}
