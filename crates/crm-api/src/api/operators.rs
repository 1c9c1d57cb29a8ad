//! `/api/operators`: the people who take contacts.

use std::sync::Arc;

use crm_core::{MaxActiveContacts, NewOperator, OperatorFilter, OperatorId, OperatorPatch, Store};
use poem_openapi::{
    Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{ApiTags, path_id::PathId};
use crate::{
    auth::Credentials,
    body::{Fields, FromBody, JsonBody, NameText, boolean, max_active_contacts, name},
    dto::{Created, Deleted, Operator, list},
    error::ApiResult,
};

/// Operator endpoints over a store.
pub(crate) struct OperatorsApi<S>(pub(crate) Arc<S>);

/// A new operator.
#[derive(Debug, Object)]
struct CreateOperator {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: NameText,
    /// Whether it takes contacts.
    #[oai(default = "yes")]
    is_active: bool,
    /// Most open contacts it may hold.
    #[oai(
        default = "default_limit",
        validator(minimum(value = "0"), maximum(value = "1000000"))
    )]
    max_active_contacts: i64,
}

/// Changes to an operator: any subset of the fields; `null` is not a value.
#[derive(Debug, Object)]
struct UpdateOperator {
    /// Display name: 1..=255 characters once trimmed, no control characters.
    name: Option<NameText>,
    /// Whether it takes contacts.
    is_active: Option<bool>,
    /// Most open contacts it may hold; lowering it below the load takes nothing away.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000")))]
    max_active_contacts: Option<i64>,
}

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
        body: JsonBody<CreateOperator>,
        _auth: Credentials,
    ) -> ApiResult<Created<Operator>> {
        let operator = self.0.create_operator(body.0).await?;
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
    ) -> ApiResult<Json<Vec<Operator>>> {
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
    async fn get(&self, id: Path<PathId>, _auth: Credentials) -> ApiResult<Json<Operator>> {
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
        body: JsonBody<UpdateOperator>,
        _auth: Credentials,
    ) -> ApiResult<Json<Operator>> {
        let operator = self.0.update_operator(OperatorId(id.get()), body.0).await?;
        Ok(Json(operator.into()))
    }

    /// Delete an operator that never had contacts
    #[oai(
        path = "/api/operators/:id",
        method = "delete",
        operation_id = "delete_operator"
    )]
    async fn delete(&self, id: Path<PathId>, _auth: Credentials) -> ApiResult<Deleted> {
        self.0.delete_operator(OperatorId(id.get())).await?;
        Ok(Deleted::Deleted)
    }
}

impl FromBody for CreateOperator {
    type Output = NewOperator;

    fn from_fields(f: &mut Fields<'_>) -> Option<NewOperator> {
        let name = f.required("name", name);
        let is_active = f.optional("is_active", boolean);
        let max_active_contacts = f.optional("max_active_contacts", max_active_contacts);
        Some(NewOperator {
            name: name?,
            is_active: is_active.unwrap_or(true),
            max_active_contacts: max_active_contacts.unwrap_or(MaxActiveContacts::DEFAULT),
        })
    }
}

impl FromBody for UpdateOperator {
    type Output = OperatorPatch;

    fn from_fields(f: &mut Fields<'_>) -> Option<OperatorPatch> {
        Some(OperatorPatch {
            name: f.optional("name", name),
            is_active: f.optional("is_active", boolean),
            max_active_contacts: f.optional("max_active_contacts", max_active_contacts),
        })
    }
}

fn yes() -> bool {
    true
}

fn default_limit() -> i64 {
    MaxActiveContacts::DEFAULT.get()
}
