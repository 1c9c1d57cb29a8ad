//! `/api/sources`: the bots and channels contacts come through, and their operators' weights.

use std::sync::Arc;

use crm_core::{NewSource, OperatorId, SourceId, SourcePatch, Store, WeightEntry, WeightSet};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};

use super::{ApiTags, path_id::PathId};
use crate::{
    auth::Credentials,
    body::{Fields, FromBody, JsonBody, NameText, integer, name, source_code, weight},
    dto::{Created, Deleted, Source, list},
    error::ApiResult,
};

/// Source endpoints over a store.
pub(crate) struct SourcesApi<S>(pub(crate) Arc<S>);

/// A new source.
#[derive(Debug, Object)]
struct CreateSource {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: NameText,
    /// Unique, case-sensitive code.
    #[oai(validator(pattern = r"^[A-Za-z0-9_.-]{1,100}$"))]
    code: String,
}

/// Changes to a source: any subset of the fields; `null` is not a value.
#[derive(Debug, Object)]
struct UpdateSource {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: Option<NameText>,
    /// Unique, case-sensitive code.
    #[oai(validator(pattern = r"^[A-Za-z0-9_.-]{1,100}$"))]
    code: Option<String>,
}

/// A source's complete set of operators and weights; `[]` clears it.
#[derive(Debug, Object)]
struct ReplaceWeights {
    /// Each operator at most once.
    operators: Vec<WeightInput>,
}

/// One operator's weight.
#[derive(Debug, Object)]
struct WeightInput {
    /// An existing operator.
    operator_id: i64,
    /// Its relative share of the source's contacts.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    weight: i64,
}

#[OpenApi(tag = "ApiTags::Sources")]
impl<S: Store> SourcesApi<S> {
    /// Create a source
    #[oai(path = "/api/sources", method = "post", operation_id = "create_source")]
    async fn create(
        &self,
        body: JsonBody<CreateSource>,
        _auth: Credentials,
    ) -> ApiResult<Created<Source>> {
        let source = self.0.create_source(body.0).await?;
        Ok(Created::Created(Json(source.into())))
    }

    /// List sources by id
    #[oai(path = "/api/sources", method = "get", operation_id = "list_sources")]
    async fn list(&self, _auth: Credentials) -> ApiResult<Json<Vec<Source>>> {
        Ok(Json(list(self.0.list_sources().await?)))
    }

    /// Read a source with its operators
    #[oai(path = "/api/sources/:id", method = "get", operation_id = "get_source")]
    async fn get(&self, id: Path<PathId>, _auth: Credentials) -> ApiResult<Json<Source>> {
        Ok(Json(self.0.get_source(SourceId(id.get())).await?.into()))
    }

    /// Change a source
    #[oai(
        path = "/api/sources/:id",
        method = "patch",
        operation_id = "update_source"
    )]
    async fn update(
        &self,
        id: Path<PathId>,
        body: JsonBody<UpdateSource>,
        _auth: Credentials,
    ) -> ApiResult<Json<Source>> {
        let source = self.0.update_source(SourceId(id.get()), body.0).await?;
        Ok(Json(source.into()))
    }

    /// Delete a source that never had contacts
    #[oai(
        path = "/api/sources/:id",
        method = "delete",
        operation_id = "delete_source"
    )]
    async fn delete(&self, id: Path<PathId>, _auth: Credentials) -> ApiResult<Deleted> {
        self.0.delete_source(SourceId(id.get())).await?;
        Ok(Deleted::Deleted)
    }

    /// Replace the source's operators and weights
    ///
    /// Atomic: on any error nothing changes.
    #[oai(
        path = "/api/sources/:id/operators",
        method = "put",
        operation_id = "replace_source_weights"
    )]
    async fn replace_weights(
        &self,
        id: Path<PathId>,
        body: JsonBody<ReplaceWeights>,
        _auth: Credentials,
    ) -> ApiResult<Json<Source>> {
        let source = self.0.replace_weights(SourceId(id.get()), body.0).await?;
        Ok(Json(source.into()))
    }
}

impl FromBody for CreateSource {
    type Output = NewSource;

    fn from_fields(f: &mut Fields<'_>) -> Option<NewSource> {
        let name = f.required("name", name);
        let code = f.required("code", source_code);
        Some(NewSource {
            name: name?,
            code: code?,
        })
    }
}

impl FromBody for UpdateSource {
    type Output = SourcePatch;

    fn from_fields(f: &mut Fields<'_>) -> Option<SourcePatch> {
        Some(SourcePatch {
            name: f.optional("name", name),
            code: f.optional("code", source_code),
        })
    }
}

impl FromBody for ReplaceWeights {
    type Output = WeightSet;

    fn from_fields(f: &mut Fields<'_>) -> Option<WeightSet> {
        let entries = f.list("operators", |f| {
            let operator_id = f.required("operator_id", integer);
            let weight = f.required("weight", weight);
            Some(WeightEntry {
                operator_id: OperatorId(operator_id?),
                weight: weight?,
            })
        })?;
        WeightSet::new(entries)
            .map_err(|err| {
                f.fail(
                    &format!("operators[{}].operator_id", err.index),
                    err.to_string(),
                )
            })
            .ok()
    }
}
