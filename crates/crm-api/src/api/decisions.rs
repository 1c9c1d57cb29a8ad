//! `/api/contacts/{id}/decisions`: why a contact is where it is.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_core::{ContactId, Store};
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    types::Any,
};
use serde_json::Value;

use super::{ApiTags, default_page_limit, page_after, path_id::PathId};
use crate::{
    auth::Credentials,
    dto::Listed,
    error::{
        ApiResult,
        declare::{API, PATH, QUERY},
    },
};

/// Decision history endpoints over a store.
pub(crate) struct DecisionsApi<S>(pub(crate) Arc<S>);

#[OpenApi(tag = "ApiTags::Contacts")]
impl<S: Store> DecisionsApi<S> {
    /// A contact's decision history, oldest first: each time it was registered, queued,
    /// drained, assigned by hand or unassigned, with the rule's record for the automatic
    /// ones and a one-line summary
    #[oai(
        path = "/api/contacts/:id/decisions",
        method = "get",
        operation_id = "list_contact_decisions"
    )]
    async fn list(
        &self,
        id: Path<PathId>,
        /// Page size.
        #[oai(
            default = "default_page_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Only entries with a larger `seq`: the last `seq` of the previous page.
        after: Query<Option<i64>>,
        _auth: Credentials,
    ) -> ApiResult<Listed<DecisionEntry>, { API | PATH | QUERY }> {
        let path = format!("/api/contacts/{}/decisions", id.get());
        let history = self.0.contact_decisions(ContactId(id.get())).await?;
        let page: Vec<DecisionEntry> = page_after(history, |e| e.seq, after.0, limit.0)
            .into_iter()
            .map(DecisionEntry::from)
            .collect();
        Ok(Listed::page(&path, &[], limit.0, page, |e| e.seq))
    }
}

/// How the contact came to its state at this point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum DecisionPath {
    /// Registered and assigned by the rule.
    Registered,
    /// Registered and stored waiting: nobody was eligible, or contacts of its source waited.
    Queued,
    /// Assigned by the rule while it waited.
    Drained,
    /// Assigned by a person.
    Manual,
    /// Taken from its operator and put back in the queue.
    Unassigned,
}

/// One entry of a contact's decision history.
#[derive(Debug, Object)]
pub(crate) struct DecisionEntry {
    /// Its place in the contact's history, from 1.
    seq: i64,
    path: DecisionPath,
    at: DateTime<Utc>,
    /// The operator the contact went to (for `unassigned`, the one it was taken from);
    /// `null` when it waits afterwards.
    #[oai(nullable)]
    operator_id: Option<i64>,
    /// For people: "2 of 5 eligible: 2 at_capacity, 1 inactive; drew 17 of 40 → operator 4".
    summary: String,
    /// The rule's record for automatic paths (each candidate's `id`, weight `w`, `load`,
    /// limit `max` and exclusion `out`; the eligible `total`, the `draw` (a point in
    /// `0..total`, where the summary counts from 1), the `chosen` operator); `null` for a
    /// person's decision.
    #[oai(nullable)]
    record: Option<Any<Value>>,
}

impl From<crm_core::DecisionEntry> for DecisionEntry {
    fn from(e: crm_core::DecisionEntry) -> Self {
        Self {
            summary: e.summary(),
            seq: e.seq,
            path: match e.path {
                crm_core::DecisionPath::Registered => DecisionPath::Registered,
                crm_core::DecisionPath::Queued => DecisionPath::Queued,
                crm_core::DecisionPath::Drained => DecisionPath::Drained,
                crm_core::DecisionPath::Manual => DecisionPath::Manual,
                crm_core::DecisionPath::Unassigned => DecisionPath::Unassigned,
            },
            at: e.at,
            operator_id: e.operator_id.map(|id| id.get()),
            // Shown keyed (version 2) whether stored compact or keyed; a version 1 record,
            // stored before version 2 existed, as the JSON it is.
            record: e
                .record
                .and_then(|r| match crm_core::Decision::from_record(&r) {
                    Some(decision) => serde_json::to_value(&decision).ok(),
                    None => serde_json::from_str(&r).ok(),
                })
                .map(Any),
        }
    }
}
