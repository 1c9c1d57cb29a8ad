//! `/api/operators`: the people who take contacts.

use std::sync::Arc;

use crm_core::{
    AssignmentsPerMinute, MaxActiveContacts, Name, NewOperator, OperatorFilter, OperatorId,
    OperatorPatch, Store,
};
use poem_openapi::{
    Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{ApiTags, path_id::PathId};
use crate::{
    auth::Credentials,
    body::{Body, Check, DefaultTrue, Field, LimitRule, NameRule, Optional, PaceRule, wire_object},
    dto::{Created, Deleted, Operator, list},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, CONFLICT, PATH, QUERY},
    },
};

/// Operator endpoints over a store.
pub(crate) struct OperatorsApi<S>(pub(crate) Arc<S>);

/// A new operator.
#[derive(Debug, Object)]
struct CreateOperator {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: Field<String, NameRule>,
    /// Whether it takes contacts.
    is_active: Field<bool, DefaultTrue>,
    /// Most open contacts it may hold.
    max_active_contacts: Field<i64, LimitRule<true>>,
    /// Most automatic assignments (registrations and drains) per minute, a bucket of that
    /// burst refilled at that rate; left out or `null`: no limit. Manual assignments are
    /// never limited.
    max_assignments_per_minute: Field<i64, PaceRule>,
}

/// Changes to an operator: any subset of the fields; `null` is not a value.
#[derive(Debug, Object)]
struct UpdateOperator {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: Field<String, Optional<NameRule>>,
    /// Whether it takes contacts.
    is_active: Field<bool, Optional>,
    /// Most open contacts it may hold; lowering it below the load takes nothing away.
    max_active_contacts: Field<i64, Optional<LimitRule>>,
    /// Most automatic assignments per minute; `null` removes the limit, and leaving it out
    /// leaves it unchanged.
    max_assignments_per_minute: Field<i64, PaceRule>,
}

wire_object!(CreateOperator, UpdateOperator);

#[OpenApi(tag = "ApiTags::Operators")]
impl<S: Store> OperatorsApi<S> {
    /// Create an operator
    #[oai(
        path = "/api/operators",
        method = "post",
        operation_id = "create_operator"
    )]
    async fn create(
        &self,
        body: Body<CreateOperator>,
        _auth: Credentials,
    ) -> ApiResult<Created<Operator>, { API | BODY }> {
        let operator = self.0.create_operator(body.0.try_into()?).await?;
        Ok(Created::Created(Json(operator.into())))
    }

    /// List operators by id
    #[oai(
        path = "/api/operators",
        method = "get",
        operation_id = "list_operators"
    )]
    async fn list(
        &self,
        is_active: Query<Option<bool>>,
        _auth: Credentials,
    ) -> ApiResult<Json<Vec<Operator>>, { API | QUERY }> {
        let filter = OperatorFilter {
            is_active: is_active.0,
        };
        Ok(Json(list(self.0.list_operators(filter).await?)))
    }

    /// Read an operator
    #[oai(
        path = "/api/operators/:id",
        method = "get",
        operation_id = "get_operator"
    )]
    async fn get(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Operator>, { API | PATH }> {
        Ok(Json(
            self.0.get_operator(OperatorId(id.get())).await?.into(),
        ))
    }

    /// Change an operator
    #[oai(
        path = "/api/operators/:id",
        method = "patch",
        operation_id = "update_operator"
    )]
    async fn update(
        &self,
        id: Path<PathId>,
        body: Body<UpdateOperator>,
        _auth: Credentials,
    ) -> ApiResult<Json<Operator>, { API | PATH | BODY }> {
        let patch = body.0.try_into()?;
        let operator = self.0.update_operator(OperatorId(id.get()), patch).await?;
        Ok(Json(operator.into()))
    }

    /// Delete an operator that never had contacts
    #[oai(
        path = "/api/operators/:id",
        method = "delete",
        operation_id = "delete_operator"
    )]
    async fn delete(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Deleted, { API | PATH | CONFLICT }> {
        self.0.delete_operator(OperatorId(id.get())).await?;
        Ok(Deleted::Deleted)
    }
}

impl TryFrom<CreateOperator> for NewOperator {
    type Error = ApiError;

    fn try_from(body: CreateOperator) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let name = check.required("name", body.name, |n| Name::parse(&n));
        let is_active = check.optional("is_active", body.is_active, Ok);
        let limit = check.optional(
            "max_active_contacts",
            body.max_active_contacts,
            MaxActiveContacts::new,
        );
        let pace = check.nullable(
            "max_assignments_per_minute",
            body.max_assignments_per_minute,
            AssignmentsPerMinute::new,
        );
        check.finish(|| {
            Some(Self {
                name: name?,
                is_active: is_active.unwrap_or(true),
                max_active_contacts: limit.unwrap_or(MaxActiveContacts::DEFAULT),
                max_assignments_per_minute: pace.flatten(),
            })
        })
    }
}

impl TryFrom<UpdateOperator> for OperatorPatch {
    type Error = ApiError;

    fn try_from(body: UpdateOperator) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let patch = Self {
            name: check.optional("name", body.name, |n| Name::parse(&n)),
            is_active: check.optional("is_active", body.is_active, Ok),
            max_active_contacts: check.optional(
                "max_active_contacts",
                body.max_active_contacts,
                MaxActiveContacts::new,
            ),
            max_assignments_per_minute: check.nullable(
                "max_assignments_per_minute",
                body.max_assignments_per_minute,
                AssignmentsPerMinute::new,
            ),
        };
        check.finish(|| Some(patch))
    }
}
