//! `/api/contacts`: registering contacts, reading them, closing and assigning them by hand.

use std::{borrow::Cow, sync::Arc, time::Instant};

use crm_core::{
    ContactFilter, ContactId, ExternalLeadId, IdempotencyKey, LeadId, NewContact, OperatorId, Page,
    Payload, SourceId, SourceRef, Store, ValueError,
};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ApiTags, default_page_limit, path_id::PathId};
use crate::{
    auth::{Credentials, Principal},
    body::{Fields, FromBody, JsonBody, external_lead_id, integer, source_code, verbatim_pattern},
    dto::{Contact, ContactJson, ContactStatus, Listed, contacts, next_link},
    error::{ApiError, ApiResult},
    metrics::Metrics,
};

/// Contact endpoints over a store.
pub(crate) struct ContactsApi<S>(pub(crate) Arc<S>);

/// A contact to register: give exactly one of `source_id` and `source_code`.
#[derive(Debug, Object)]
struct CreateContact {
    /// The lead's identifier in its channel, kept exactly as sent (1..=255 characters,
    /// not all whitespace, no control characters); a JSON integer is taken as its
    /// decimal text.
    external_lead_id: StringOrInteger,
    /// The source, by id; `null` is the same as leaving it out.
    #[oai(nullable)]
    source_id: Option<i64>,
    /// The source, by code; `null` is the same as leaving it out.
    #[oai(nullable, validator(pattern = r"^[A-Za-z0-9_.-]{1,100}$"))]
    source_code: Option<String>,
    /// Anything the source sends along (at most 64 KiB as JSON); `null` when left out.
    payload: Option<Value>,
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
    let canonical = canonical(&serde_json::json!([
        new.external_lead_id.as_str(),
        source,
        payload
    ]));
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// JSON text with every object's keys sorted, so key order does not matter.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// A manual assignment.
#[derive(Debug, Object)]
struct AssignContact {
    /// An existing, active operator below its limit.
    operator_id: i64,
}

/// Schema of a value that is a string or an integer; [`FromBody`] does the parsing.
#[derive(Debug)]
struct StringOrInteger(Value);

impl<S: Store> ContactsApi<S> {
    /// A source key may register contacts for its own source only.
    async fn require_own_source(&self, own: SourceId, named: &SourceRef) -> Result<(), ApiError> {
        let allowed = match named {
            SourceRef::Id(id) => *id == own,
            SourceRef::Code(code) => match self.0.get_source(own).await {
                Ok(source) => source.code == code.as_str(),
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
        body: JsonBody<CreateContact>,
        /// 1..=255 visible ASCII characters chosen by the client, one per logical request.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<KeyHeader>>,
        metrics: Data<&Arc<Metrics>>,
        principal: Data<&Principal>,
        _auth: Credentials,
    ) -> ApiResult<Registered> {
        let started = Instant::now();
        let new = body.0;
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
            ContactJson::new(&contact)?,
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
    ) -> ApiResult<Listed<Contact>> {
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
        let found = self.0.list_contacts(filter).await?;
        let last = found.last().map(|c| c.id.get());
        let link = next_link("/api/contacts", &params, limit.0, found.len(), last);
        Ok(Listed::Page(Json(contacts(found)?), link))
    }

    /// Read a contact
    #[oai(
        path = "/api/contacts/:id",
        method = "get",
        operation_id = "get_contact"
    )]
    async fn get(&self, id: Path<PathId>, _auth: Credentials) -> ApiResult<Json<Contact>> {
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
    async fn close(&self, id: Path<PathId>, _auth: Credentials) -> ApiResult<Json<Contact>> {
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
        body: JsonBody<AssignContact>,
        _auth: Credentials,
    ) -> ApiResult<Json<Contact>> {
        let contact = self.0.assign_contact(ContactId(id.get()), body.0).await?;
        Ok(Json(contact.try_into()?))
    }
}

impl FromBody for CreateContact {
    type Output = NewContact;

    fn from_fields(f: &mut Fields<'_>) -> Option<NewContact> {
        let external_lead_id = f.required("external_lead_id", external_lead_id);
        // Like the original, an explicit `null` is the same as leaving the field out.
        let given = |name| f.get(name).filter(|v| !v.is_null());
        let source = match (given("source_id"), given("source_code")) {
            (Some(id), None) => f
                .check("source_id", integer(id))
                .map(|id| SourceRef::Id(SourceId(id))),
            (None, Some(code)) => f
                .check("source_code", source_code(code))
                .map(SourceRef::Code),
            (None, None) => {
                f.fail("source_id", "give source_id or source_code");
                None
            }
            (Some(_), Some(_)) => {
                f.fail("source_code", "give source_id or source_code, not both");
                None
            }
        };
        let payload = match f.get("payload") {
            None => Some(Payload::null()),
            Some(value) => f.check(
                "payload",
                Payload::from_value(value).map_err(|e: ValueError| e.to_string()),
            ),
        };
        Some(NewContact {
            external_lead_id: external_lead_id?,
            source: source?,
            payload: payload?,
        })
    }
}

impl FromBody for AssignContact {
    type Output = OperatorId;

    fn from_fields(f: &mut Fields<'_>) -> Option<OperatorId> {
        f.required("operator_id", integer).map(OperatorId)
    }
}

impl Type for StringOrInteger {
    const IS_REQUIRED: bool = true;
    type RawValueType = Value;
    type RawElementValueType = Value;

    fn name() -> std::borrow::Cow<'static, str> {
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

    fn as_raw_value(&self) -> Option<&Value> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for StringOrInteger {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(Self(value.unwrap_or_default()))
    }
}

impl ToJSON for StringOrInteger {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}
