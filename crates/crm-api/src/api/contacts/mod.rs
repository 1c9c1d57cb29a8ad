//! `/api/contacts`: registering contacts, reading them, closing and assigning them by hand.

use std::{borrow::Cow, sync::Arc, time::Instant};

use crm_core::{
    ContactFilter, ContactId, ExternalLeadId, IdempotencyKey, LeadId, NewContact, OperatorId, Page,
    Payload, SourceCode, SourceId, SourceRef, Store,
};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ApiTags, default_page_limit, path_id::PathId};
use crate::{
    auth::{Credentials, Principal},
    body::{Body, Check, CodeRule, Field, Optional, Wire, verbatim_pattern, wire_object},
    dto::{Contact, ContactStatus, Listed, contacts},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, CONFLICT, MISSING, PATH, QUERY},
    },
    metrics::Metrics,
};

mod quick;

use quick::{ContactBody, ContactJson};

/// Contact endpoints over a store.
pub(crate) struct ContactsApi<S>(pub(crate) Arc<S>);

/// A contact to register: give exactly one of `source_id` and `source_code`.
#[derive(Debug, Object)]
struct CreateContact {
    /// The lead's identifier in its channel, kept exactly as sent (1..=255 characters,
    /// not all whitespace, no control characters); a JSON integer is taken as its
    /// decimal text.
    external_lead_id: Field<StringOrInteger>,
    /// The source, by id; `null` is the same as leaving it out.
    #[oai(nullable)]
    source_id: Field<i64, Optional>,
    /// The source, by code; `null` is the same as leaving it out.
    #[oai(nullable)]
    source_code: Field<String, Optional<CodeRule>>,
    /// Anything the source sends along (at most 64 KiB as JSON); `null` when left out.
    payload: Field<Value, Optional>,
}

/// The answer to a registration.
#[derive(Debug, ApiResponse)]
enum Registered {
    /// Registered (or, with `Idempotent-Replayed: true`, registered before).
    #[oai(status = 201)]
    Created(
        ContactJson,
        /// `true` when this is the stored answer to an earlier request with the same key.
        #[oai(header = "Idempotent-Replayed")]
        Option<String>,
    ),
}

/// The `Idempotency-Key` header: its schema states the rule (1..=255 visible ASCII
/// characters) for the document, and `IdempotencyKey::new` checks it. Not poem-openapi's
/// `validator(pattern)`, which compiles its regex again for every request (measured at
/// ~50 µs per keyed registration, more than the rest of the request).
#[derive(Debug)]
struct KeyHeader(String);

impl Type for KeyHeader {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "idempotency_key".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(format!("^[!-~]{{1,{}}}$", IdempotencyKey::MAX_CHARS)),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for KeyHeader {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

/// What makes two registrations "the same request": the parsed body, with object keys
/// in a canonical order, hashed.
fn fingerprint(new: &NewContact) -> String {
    let source = match &new.source {
        SourceRef::Id(id) => serde_json::json!({ "id": id.get() }),
        SourceRef::Code(code) => serde_json::json!({ "code": code.as_str() }),
    };
    let payload = new.payload.to_value().unwrap_or(Value::Null);
    let mut request = serde_json::json!([new.external_lead_id.as_str(), source, payload]);
    // Every object's keys sorted, so key order does not matter.
    request.sort_all_objects();
    hex::encode(Sha256::digest(request.to_string().as_bytes()))
}

/// A manual assignment.
#[derive(Debug, Object)]
struct AssignContact {
    /// An existing, active operator below its limit.
    operator_id: Field<i64>,
}

wire_object!(CreateContact, AssignContact);

/// A lead's external id as sent: a string, or an integer as its decimal text.
#[derive(Debug)]
struct StringOrInteger(String);

impl<S: Store> ContactsApi<S> {
    /// A source key may register contacts for its own source only.
    async fn require_own_source(&self, own: SourceId, named: &SourceRef) -> Result<(), ApiError> {
        let allowed = match named {
            SourceRef::Id(id) => *id == own,
            SourceRef::Code(code) => match self.0.get_source(own).await {
                Ok(source) => source.code == *code,
                Err(crm_core::StoreError::NotFound(_)) => false,
                Err(err) => return Err(err.into()),
            },
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                crate::error::ErrorCode::Forbidden,
                "this source key may only register contacts for its own source",
            ))
        }
    }
}

#[OpenApi(tag = "ApiTags::Contacts")]
impl<S: Store> ContactsApi<S> {
    /// Register a contact
    ///
    /// Finds or creates the lead and assigns an operator of the source by weight among
    /// those active and below their limit; when none is, the contact stays unassigned.
    ///
    /// With an `Idempotency-Key`, a retry of the same request (same credential, same body
    /// after parsing) within 24 hours gets the first answer again, marked
    /// `Idempotent-Replayed: true`, and registers nothing; the key with a different body
    /// is refused (422 `idempotency_key_reused`).
    #[oai(
        path = "/api/contacts",
        method = "post",
        operation_id = "register_contact"
    )]
    async fn create(
        &self,
        body: ContactBody,
        /// 1..=255 visible ASCII characters chosen by the client, one per logical request.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<KeyHeader>>,
        metrics: Data<&Arc<Metrics>>,
        principal: Data<&Principal>,
        _auth: Credentials,
    ) -> ApiResult<Registered, { API | BODY | MISSING }> {
        let started = Instant::now();
        let new = match body {
            ContactBody::Quick(new) => new,
            ContactBody::Stock(wire) => NewContact::try_from(wire)?,
        };
        if let Principal::SourceKey { source_id, .. } = *principal.0 {
            self.require_own_source(source_id, &new.source).await?;
        }
        let (contact, replayed) = match idempotency_key.0 {
            None => (self.0.register_contact(new).await?, false),
            Some(KeyHeader(key)) => {
                let key = IdempotencyKey::new(&principal.identity(), &key, &fingerprint(&new))
                    .map_err(|err| ApiError::invalid("Idempotency-Key", err.to_string()))?;
                let registration = self.0.register_contact_once(new, key).await?;
                (registration.contact, registration.replayed)
            }
        };
        if !replayed {
            metrics.registered(&contact, started.elapsed());
        }
        Ok(Registered::Created(
            contact.try_into()?,
            replayed.then(|| "true".to_owned()),
        ))
    }

    /// List contacts by id, a page at a time
    #[oai(path = "/api/contacts", method = "get", operation_id = "list_contacts")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        /// Only contacts with this status.
        status: Query<Option<ContactStatus>>,
        /// Only contacts assigned to this operator.
        operator_id: Query<Option<i64>>,
        /// Only contacts from this source.
        source_id: Query<Option<i64>>,
        /// Only contacts of this lead.
        lead_id: Query<Option<i64>>,
        /// `true`: only contacts without an operator.
        unassigned: Query<Option<bool>>,
        /// Page size.
        #[oai(
            default = "default_page_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Only contacts with a larger id: the last id of the previous page.
        after: Query<Option<i64>>,
        _auth: Credentials,
    ) -> ApiResult<Listed<Contact>, { API | QUERY }> {
        let filter = ContactFilter {
            status: status.0.map(Into::into),
            operator_id: operator_id.0.map(OperatorId),
            source_id: source_id.0.map(SourceId),
            lead_id: lead_id.0.map(LeadId),
            unassigned: unassigned.0.unwrap_or(false),
            page: Page {
                after: after.0,
                limit: limit.0,
            },
        };
        let text = |v: Option<i64>| v.map(|v| v.to_string());
        let params = [
            ("status", filter.status.map(|s| s.as_str().to_owned())),
            ("operator_id", text(operator_id.0)),
            ("source_id", text(source_id.0)),
            ("lead_id", text(lead_id.0)),
            ("unassigned", filter.unassigned.then(|| "true".to_owned())),
        ];
        let found = contacts(self.0.list_contacts(filter).await?)?;
        Ok(Listed::page(
            "/api/contacts",
            &params,
            limit.0,
            found,
            |c| c.id,
        ))
    }

    /// Read a contact
    #[oai(
        path = "/api/contacts/:id",
        method = "get",
        operation_id = "get_contact"
    )]
    async fn get(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Contact>, { API | PATH }> {
        Ok(Json(
            self.0.get_contact(ContactId(id.get())).await?.try_into()?,
        ))
    }

    /// Close a contact, freeing its operator's capacity; closing again changes nothing
    #[oai(
        path = "/api/contacts/:id/close",
        method = "post",
        operation_id = "close_contact"
    )]
    async fn close(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Contact>, { API | PATH }> {
        Ok(Json(
            self.0
                .close_contact(ContactId(id.get()))
                .await?
                .try_into()?,
        ))
    }

    /// Assign an open contact to an operator by hand
    ///
    /// The operator needs no weight for the contact's source; the previous operator's
    /// capacity is freed. Assigning it to its current operator changes nothing.
    #[oai(
        path = "/api/contacts/:id/assign",
        method = "post",
        operation_id = "assign_contact"
    )]
    async fn assign(
        &self,
        id: Path<PathId>,
        body: Body<AssignContact>,
        _auth: Credentials,
    ) -> ApiResult<Json<Contact>, { API | PATH | BODY | CONFLICT }> {
        let mut check = Check::default();
        let operator = check.required("operator_id", body.0.operator_id, Ok);
        let operator = check.finish(|| operator.map(OperatorId))?;
        let contact = self.0.assign_contact(ContactId(id.get()), operator).await?;
        Ok(Json(contact.try_into()?))
    }

    /// Put an open contact back in the queue
    ///
    /// Takes it from its operator (freeing that operator's capacity) and puts it back in the
    /// waiting queue at its original place (queue order is id order). A drain follows at
    /// once, in which the operator it was taken from is passed over for it (reason
    /// `unassigned_from` in its decision history): it goes to another eligible operator, or
    /// waits. A contact that waits already is answered as it is.
    #[oai(
        path = "/api/contacts/:id/unassign",
        method = "post",
        operation_id = "unassign_contact"
    )]
    async fn unassign(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Contact>, { API | PATH | CONFLICT }> {
        let contact = self.0.unassign_contact(ContactId(id.get())).await?;
        Ok(Json(contact.try_into()?))
    }
}

impl TryFrom<CreateContact> for NewContact {
    type Error = ApiError;

    fn try_from(body: CreateContact) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let external_lead_id = check.required("external_lead_id", body.external_lead_id, |v| {
            ExternalLeadId::parse(&v.0)
        });
        // Like the original, an explicit `null` is the same as leaving the field out.
        let source = match (body.source_id, body.source_code) {
            (id @ (Field::Given(_) | Field::Mistyped), Field::Missing | Field::Null) => {
                check.required("source_id", id, |id| Ok(SourceRef::Id(SourceId(id))))
            }
            (Field::Missing | Field::Null, code @ (Field::Given(_) | Field::Mistyped)) => check
                .required("source_code", code, |c| {
                    SourceCode::parse(&c).map(SourceRef::Code)
                }),
            (Field::Missing | Field::Null, Field::Missing | Field::Null) => {
                check.fail("source_id", "give source_id or source_code");
                None
            }
            _ => {
                check.fail("source_code", "give source_id or source_code, not both");
                None
            }
        };
        // Any JSON value, `null` when left out.
        let payload = match body.payload {
            Field::Given(value) => Payload::from_value(&value)
                .map_err(|err| check.fail("payload", err.to_string()))
                .ok(),
            _ => Some(Payload::null()),
        };
        check.finish(|| {
            Some(Self {
                external_lead_id: external_lead_id?,
                source: source?,
                payload: payload?,
            })
        })
    }
}

impl Wire for StringOrInteger {
    const EXPECTED: &'static str = "must be a string or an integer";

    fn from_json(value: Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self(s)),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Self(n.to_string())),
            _ => None,
        }
    }
}

impl Type for StringOrInteger {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string_or_integer".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let string = MetaSchema {
            min_length: Some(1),
            max_length: Some(ExternalLeadId::MAX_CHARS),
            pattern: Some(verbatim_pattern()),
            ..MetaSchema::new("string")
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            one_of: vec![MetaSchemaRef::Inline(Box::new(string)), i64::schema_ref()],
            ..MetaSchema::ANY
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ToJSON for StringOrInteger {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints computed by the hand-written canonical JSON that serde_json's key
    /// sorting replaced: a retry of a key stored before the upgrade must match byte for
    /// byte, or it would be answered 422 `idempotency_key_reused`.
    #[test]
    fn fingerprints_are_those_stored_before() {
        let new = |external: &str, source, payload: Value| NewContact {
            external_lead_id: ExternalLeadId::parse(external).expect("valid"),
            source,
            payload: Payload::from_value(&payload).expect("valid"),
        };
        let payload =
            serde_json::json!({"b": 1, "a": [{"z": null, "y": "é\n\"x"}], "c": 1.5, "B": true});
        assert_eq!(
            fingerprint(&new("42", SourceRef::Id(SourceId(7)), payload)),
            "6a4b629579b5a9f26978d0da87921fbab39bda3f2632a9f8369f8738f0fd70a0"
        );
        let code = SourceCode::parse("tg-bot").expect("valid");
        assert_eq!(
            fingerprint(&new(" lead ", SourceRef::Code(code), Value::Null)),
            "acc47e225567917dcbbb90b930d6f9a6d6d312001e3549155017a8a3a8792dd8"
        );
    }
}
