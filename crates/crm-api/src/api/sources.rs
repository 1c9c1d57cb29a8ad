//! `/api/sources`: the bots and channels contacts come through, and their operators' weights.

use std::sync::Arc;

use crm_core::{
    Name, NewSource, OperatorId, SourceCode, SourceId, SourcePatch, SourceRule, Store, Strategy,
    ValueError, Weight, WeightEntry, WeightSet,
};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};

use super::{ApiTags, path_id::PathId};
use crate::{
    auth::Credentials,
    body::{
        Body, Check, CodeRule, DefaultFalse, DefaultStrategy, Field, NameRule, Optional,
        StrategyRule, WeightRule, wire_object,
    },
    dto::{Created, Deleted, Source, list},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, CONFLICT, PATH},
    },
};

/// Source endpoints over a store.
pub(crate) struct SourcesApi<S>(pub(crate) Arc<S>);

/// A new source.
#[derive(Debug, Object)]
struct CreateSource {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: Field<String, NameRule>,
    /// Unique, case-sensitive code.
    code: Field<String, CodeRule>,
    /// How the source chooses among its eligible operators: `weighted_random` (a draw
    /// with probability weight / sum, the default) or `smooth_weighted` (deterministic:
    /// every operator within one contact of its share of the weights).
    strategy: Field<String, DefaultStrategy>,
    /// A returning lead goes to the operator of its latest contact from this source when
    /// that operator could take it now (active, under its limit, not paced out, with a
    /// weight here); otherwise the strategy decides.
    sticky_owner: Field<bool, DefaultFalse>,
}

/// Changes to a source: any subset of the fields; `null` is not a value.
#[derive(Debug, Object)]
struct UpdateSource {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: Field<String, Optional<NameRule>>,
    /// Unique, case-sensitive code.
    code: Field<String, Optional<CodeRule>>,
    /// `weighted_random` or `smooth_weighted`; the smooth state is kept (a weights change
    /// resets it).
    strategy: Field<String, Optional<StrategyRule>>,
    /// Whether returning leads go back to their operator.
    sticky_owner: Field<bool, Optional>,
}

/// A source's complete set of operators and weights; `[]` clears it.
#[derive(Debug, Object)]
struct ReplaceWeights {
    /// Each operator at most once.
    operators: Field<Vec<Field<WeightInput>>>,
}

/// One operator's weight.
#[derive(Debug, Object)]
pub(super) struct WeightInput {
    /// An existing operator.
    operator_id: Field<i64>,
    /// Its relative share of the source's contacts.
    weight: Field<i64, WeightRule>,
}

wire_object!(CreateSource, UpdateSource, ReplaceWeights, WeightInput);

#[OpenApi(tag = "ApiTags::Sources")]
impl<S: Store> SourcesApi<S> {
    /// Create a source
    #[oai(path = "/api/sources", method = "post", operation_id = "create_source")]
    async fn create(
        &self,
        body: Body<CreateSource>,
        _auth: Credentials,
    ) -> ApiResult<Created<Source>, { API | BODY | CONFLICT }> {
        let source = self.0.create_source(body.0.try_into()?).await?;
        Ok(Created::Created(Json(source.into())))
    }

    /// List sources by id
    #[oai(path = "/api/sources", method = "get", operation_id = "list_sources")]
    async fn list(&self, _auth: Credentials) -> ApiResult<Json<Vec<Source>>, API> {
        Ok(Json(list(self.0.list_sources().await?)))
    }

    /// Read a source with its operators
    #[oai(path = "/api/sources/:id", method = "get", operation_id = "get_source")]
    async fn get(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Source>, { API | PATH }> {
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
        body: Body<UpdateSource>,
        _auth: Credentials,
    ) -> ApiResult<Json<Source>, { API | PATH | BODY | CONFLICT }> {
        let patch = body.0.try_into()?;
        let source = self.0.update_source(SourceId(id.get()), patch).await?;
        Ok(Json(source.into()))
    }

    /// Delete a source that never had contacts
    #[oai(
        path = "/api/sources/:id",
        method = "delete",
        operation_id = "delete_source"
    )]
    async fn delete(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Deleted, { API | PATH | CONFLICT }> {
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
        body: Body<ReplaceWeights>,
        _auth: Credentials,
    ) -> ApiResult<Json<Source>, { API | PATH | BODY }> {
        let weights = body.0.try_into()?;
        let source = self.0.replace_weights(SourceId(id.get()), weights).await?;
        Ok(Json(source.into()))
    }
}

fn name(text: String) -> Result<Name, crm_core::ValueError> {
    Name::parse(&text)
}

fn code(text: String) -> Result<SourceCode, crm_core::ValueError> {
    SourceCode::parse(&text)
}

impl TryFrom<CreateSource> for NewSource {
    type Error = ApiError;

    fn try_from(body: CreateSource) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let name = check.required("name", body.name, name);
        let code = check.required("code", body.code, code);
        let strategy = check.optional("strategy", body.strategy, strategy);
        let sticky_owner = check.optional("sticky_owner", body.sticky_owner, Ok);
        check.finish(|| {
            Some(Self {
                name: name?,
                code: code?,
                rule: SourceRule {
                    strategy: strategy.unwrap_or_default(),
                    sticky_owner: sticky_owner.unwrap_or(false),
                },
            })
        })
    }
}

impl TryFrom<UpdateSource> for SourcePatch {
    type Error = ApiError;

    fn try_from(body: UpdateSource) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let patch = Self {
            name: check.optional("name", body.name, name),
            code: check.optional("code", body.code, code),
            strategy: check.optional("strategy", body.strategy, strategy),
            sticky_owner: check.optional("sticky_owner", body.sticky_owner, Ok),
        };
        check.finish(|| Some(patch))
    }
}

fn strategy(name: String) -> Result<Strategy, ValueError> {
    name.parse()
}

impl TryFrom<ReplaceWeights> for WeightSet {
    type Error = ApiError;

    fn try_from(body: ReplaceWeights) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let entries = weight_entries(&mut check, body.operators);
        weight_set(check.finish(|| entries)?)
    }
}

/// The entries of an `operators` list, each problem recorded in `check` with its path
/// (`operators[1].weight`); `None` when the list itself is missing or not a list.
pub(super) fn weight_entries(
    check: &mut Check,
    operators: Field<Vec<Field<WeightInput>>>,
) -> Option<Vec<WeightEntry>> {
    let items = check.required("operators", operators, Ok)?;
    let mut entries = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Some(item) = check.required(format_args!("operators[{i}]"), item, Ok) else {
            continue;
        };
        let operator_id = check.required(
            format_args!("operators[{i}].operator_id"),
            item.operator_id,
            Ok,
        );
        let weight = check.required(
            format_args!("operators[{i}].weight"),
            item.weight,
            Weight::new,
        );
        if let (Some(id), Some(weight)) = (operator_id, weight) {
            entries.push(WeightEntry {
                operator_id: OperatorId(id),
                weight,
            });
        }
    }
    Some(entries)
}

/// Checked entries as a set: an operator listed twice is a 422 on its second place.
pub(super) fn weight_set(entries: Vec<WeightEntry>) -> Result<WeightSet, ApiError> {
    WeightSet::new(entries).map_err(|err| {
        ApiError::invalid(
            format!("operators[{}].operator_id", err.index),
            err.to_string(),
        )
    })
}
