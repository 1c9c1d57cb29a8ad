//! `/api/leads`: the end customers, each with all their contacts.

use std::sync::Arc;

use crm_core::{LeadFilter, LeadId, Page, Store};
use poem_openapi::{
    OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{ApiTags, default_page_limit, path_id::PathId};
use crate::{
    auth::Credentials,
    dto::{Lead, LeadDetail, Listed, list},
    error::{
        ApiResult,
        declare::{API, PATH, QUERY},
    },
};

/// Lead endpoints over a store.
pub(crate) struct LeadsApi<S>(pub(crate) Arc<S>);

#[OpenApi(tag = "ApiTags::Leads")]
impl<S: Store> LeadsApi<S> {
    /// List leads by id, a page at a time
    #[oai(path = "/api/leads", method = "get", operation_id = "list_leads")]
    async fn list(
        &self,
        /// Only the lead with this external id (exact match). An external id holds no
        /// control characters, so one here is refused rather than looked for.
        #[oai(validator(pattern = r"^[^\u0000-\u001F\u007F]*$"))]
        external_id: Query<Option<String>>,
        /// Page size.
        #[oai(
            default = "default_page_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Only leads with a larger id: the last id of the previous page.
        after: Query<Option<i64>>,
        _auth: Credentials,
    ) -> ApiResult<Listed<Lead>, { API | QUERY }> {
        let filter = LeadFilter {
            external_id: external_id.0,
            page: Page {
                after: after.0,
                limit: limit.0,
            },
        };
        let params = [("external_id", filter.external_id.clone())];
        let leads = list(self.0.list_leads(filter).await?);
        Ok(Listed::page(
            "/api/leads",
            &params,
            limit.0,
            leads,
            |l: &Lead| l.id,
        ))
    }

    /// Read a lead with all its contacts, oldest first
    #[oai(path = "/api/leads/:id", method = "get", operation_id = "get_lead")]
    async fn get(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<LeadDetail>, { API | PATH }> {
        Ok(Json(self.0.get_lead(LeadId(id.get())).await?.try_into()?))
    }
}
