//! Response bodies and response kinds of the API, converted from the core's entities.
//!
//! These are the HTTP contract: field names and shapes follow the original service, and
//! never change because a domain or database type did.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse, Enum, Object,
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::{ToJSON, Type},
};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::ApiError;

/// A JSON response body that serde writes straight into bytes, documented exactly like
/// poem-openapi's `Json<T>` (same content type, same schema).
///
/// `Json<T>` first builds a `serde_json::Value` tree of the whole body (a map per object,
/// a copy of every string and of the payload), then serialises that: on the registration
/// path this was about a sixth of the HTTP side's instructions (docs/benchmarks.md). `T`'s
/// `Serialize` must produce what its `ToJSON` does; a test in this module checks it for
/// every type used here.
#[derive(Debug)]
pub(crate) struct SerdeJson<T>(pub T);

impl<T: Type> Payload for SerdeJson<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for SerdeJson<T> {
    fn into_response(self) -> Response {
        // The content type is the same constant `Json<T>` sends.
        poem::web::Json(self.0).into_response()
    }
}

/// Timestamps as poem-openapi writes them (`to_rfc3339`: `+00:00`, fractional seconds as
/// needed), not chrono's serde form (`Z`).
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339())
}

#[allow(clippy::ref_option)] // the signature serde's `serialize_with` calls
fn rfc3339_opt<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, s),
        None => s.serialize_none(),
    }
}

/// An operator with its current load.
#[derive(Debug, Object)]
pub(crate) struct Operator {
    id: i64,
    name: String,
    is_active: bool,
    /// Most open contacts the operator may hold.
    max_active_contacts: i64,
    /// Open contacts assigned to the operator now.
    active_contacts: i64,
    created_at: DateTime<Utc>,
}

/// The few fields of an operator shown inside other entities.
#[derive(Debug, Object, Serialize)]
pub(crate) struct OperatorSummary {
    id: i64,
    name: String,
    is_active: bool,
}

/// A source with its operators and their weights.
#[derive(Debug, Object)]
pub(crate) struct Source {
    id: i64,
    name: String,
    /// Unique, case-sensitive code clients may use instead of the id.
    code: String,
    created_at: DateTime<Utc>,
    /// The operators that take this source's contacts, by operator id.
    operators: Vec<SourceOperator>,
}

/// One operator's weight for a source.
#[derive(Debug, Object)]
pub(crate) struct SourceOperator {
    operator_id: i64,
    /// Relative share of the source's contacts.
    weight: i64,
    operator: OperatorSummary,
}

/// An end customer, known by the identifier its channel gave it.
#[derive(Debug, Object)]
pub(crate) struct Lead {
    id: i64,
    /// The channel's identifier, exactly as sent.
    external_id: String,
    created_at: DateTime<Utc>,
}

/// A lead with all its contacts, oldest first.
#[derive(Debug, Object)]
pub(crate) struct LeadDetail {
    id: i64,
    /// The channel's identifier, exactly as sent.
    external_id: String,
    created_at: DateTime<Utc>,
    /// Its contacts across all sources, oldest first.
    contacts: Vec<Contact>,
}

/// Whether a contact still needs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub(crate) enum ContactStatus {
    /// Counts towards its operator's load.
    Open,
    /// Done.
    Closed,
}

/// One appeal of a lead through a source.
#[derive(Debug, Object, Serialize)]
pub(crate) struct Contact {
    id: i64,
    lead_id: i64,
    source_id: i64,
    /// The assigned operator; `null` when no operator could take it.
    #[oai(nullable)]
    operator_id: Option<i64>,
    /// The assigned operator; `null` when unassigned.
    #[oai(nullable)]
    operator: Option<OperatorSummary>,
    status: ContactStatus,
    /// What the source sent along: any JSON value.
    payload: Value,
    #[serde(serialize_with = "rfc3339")]
    created_at: DateTime<Utc>,
    /// When it was closed; `null` while open.
    #[oai(nullable)]
    #[serde(serialize_with = "rfc3339_opt")]
    closed_at: Option<DateTime<Utc>>,
}

/// An operator's load figures.
#[derive(Debug, Object)]
pub(crate) struct OperatorStats {
    operator_id: i64,
    operator_name: String,
    max_active_contacts: i64,
    /// Open contacts now (the same number as the operator's `active_contacts`).
    open_contacts: i64,
    /// Contacts assigned to the operator now, open or closed.
    total_contacts: i64,
}

/// A `201 Created` answer.
#[derive(Debug, ApiResponse)]
pub(crate) enum Created<T: ToJSON> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// A `204 No Content` answer to a delete.
#[derive(Debug, ApiResponse)]
pub(crate) enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// One page of an id-ordered listing.
#[derive(Debug, ApiResponse)]
pub(crate) enum Listed<T: ToJSON> {
    /// The page, ordered by id.
    #[oai(status = 200)]
    Page(
        Json<Vec<T>>,
        /// `<…&after=LAST_ID>; rel="next"` while the page is full.
        #[oai(header = "Link")]
        Option<String>,
    ),
}

impl From<crm_core::Operator> for Operator {
    fn from(o: crm_core::Operator) -> Self {
        Self {
            id: o.id.get(),
            name: o.name,
            is_active: o.is_active,
            max_active_contacts: o.max_active_contacts,
            active_contacts: o.open_contacts,
            created_at: o.created_at,
        }
    }
}

impl From<crm_core::OperatorSummary> for OperatorSummary {
    fn from(o: crm_core::OperatorSummary) -> Self {
        Self {
            id: o.id.get(),
            name: o.name,
            is_active: o.is_active,
        }
    }
}

impl From<crm_core::Source> for Source {
    fn from(s: crm_core::Source) -> Self {
        Self {
            id: s.id.get(),
            name: s.name,
            code: s.code,
            created_at: s.created_at,
            operators: s
                .operators
                .into_iter()
                .map(|so| SourceOperator {
                    operator_id: so.operator.id.get(),
                    weight: so.weight,
                    operator: so.operator.into(),
                })
                .collect(),
        }
    }
}

impl From<crm_core::Lead> for Lead {
    fn from(l: crm_core::Lead) -> Self {
        Self {
            id: l.id.get(),
            external_id: l.external_id,
            created_at: l.created_at,
        }
    }
}

impl TryFrom<crm_core::LeadWithContacts> for LeadDetail {
    type Error = ApiError;

    fn try_from(l: crm_core::LeadWithContacts) -> Result<Self, ApiError> {
        Ok(Self {
            id: l.lead.id.get(),
            external_id: l.lead.external_id,
            created_at: l.lead.created_at,
            contacts: contacts(l.contacts)?,
        })
    }
}

impl From<crm_core::ContactStatus> for ContactStatus {
    fn from(s: crm_core::ContactStatus) -> Self {
        match s {
            crm_core::ContactStatus::Open => Self::Open,
            crm_core::ContactStatus::Closed => Self::Closed,
        }
    }
}

impl From<ContactStatus> for crm_core::ContactStatus {
    fn from(s: ContactStatus) -> Self {
        match s {
            ContactStatus::Open => Self::Open,
            ContactStatus::Closed => Self::Closed,
        }
    }
}

impl TryFrom<crm_core::Contact> for Contact {
    type Error = ApiError;

    /// Fails only if stored payload text is not JSON, which the store rules out.
    fn try_from(c: crm_core::Contact) -> Result<Self, ApiError> {
        let payload = c
            .payload
            .to_value()
            .map_err(|err| ApiError::internal("stored payload is not JSON", &err))?;
        Ok(Self {
            id: c.id.get(),
            lead_id: c.lead_id.get(),
            source_id: c.source_id.get(),
            operator_id: c.operator.as_ref().map(|o| o.id.get()),
            operator: c.operator.map(Into::into),
            status: c.status.into(),
            payload,
            created_at: c.created_at,
            closed_at: c.closed_at,
        })
    }
}

impl From<crm_core::OperatorStats> for OperatorStats {
    fn from(s: crm_core::OperatorStats) -> Self {
        Self {
            operator_id: s.operator_id.get(),
            operator_name: s.operator_name,
            max_active_contacts: s.max_active_contacts,
            open_contacts: s.open_contacts,
            total_contacts: s.total_contacts,
        }
    }
}

/// Converts a list of contacts.
pub(crate) fn contacts(list: Vec<crm_core::Contact>) -> Result<Vec<Contact>, ApiError> {
    list.into_iter().map(Contact::try_from).collect()
}

/// Converts a list whose items convert infallibly.
pub(crate) fn list<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}

/// The `Link` header of a full page: the same query with `after` set to the last id.
/// `params` are the filters as given, already in their query spelling.
pub(crate) fn next_link(
    path: &str,
    params: &[(&str, Option<String>)],
    limit: u32,
    returned: usize,
    last_id: Option<i64>,
) -> Option<String> {
    let last_id = last_id.filter(|_| returned >= limit as usize)?;
    let mut query = String::new();
    for (name, value) in params {
        if let Some(value) = value {
            query.push_str(name);
            query.push('=');
            query.push_str(&percent_encode(value));
            query.push('&');
        }
    }
    Some(format!(
        "<{path}?{query}limit={limit}&after={last_id}>; rel=\"next\""
    ))
}

/// Escapes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use poem::http::header::CONTENT_TYPE;

    use super::*;

    /// Contacts covering every shape a field can take: with and without operator and
    /// closing time, whole and fractional seconds, escapes, non-ASCII, nested payloads.
    fn contacts() -> Vec<Contact> {
        let at = |secs, nanos| Utc.timestamp_opt(secs, nanos).single().expect("a time");
        vec![
            Contact {
                id: 1,
                lead_id: 2,
                source_id: 3,
                operator_id: None,
                operator: None,
                status: ContactStatus::Open,
                payload: Value::String("hello".to_owned()),
                created_at: at(1_764_500_000, 0),
                closed_at: None,
            },
            Contact {
                id: i64::MAX,
                lead_id: 7,
                source_id: 1,
                operator_id: Some(4),
                operator: Some(OperatorSummary {
                    id: 4,
                    name: "Анна \"Q\" \u{1F600}\n".to_owned(),
                    is_active: false,
                }),
                status: ContactStatus::Closed,
                payload: serde_json::json!({
                    "text": "привет", "n": -1.5, "big": 12_345_678_901_234_i64,
                    "list": [null, true, {"z": 1, "a": [2]}], "empty": {}
                }),
                created_at: at(1_764_500_000, 123_456_789),
                closed_at: Some(at(1_764_600_000, 1_000)),
            },
        ]
    }

    #[test]
    fn serde_json_bodies_are_byte_for_byte_those_of_poem_openapi_json() {
        for contact in contacts() {
            let expected = serde_json::to_vec(&contact.to_json()).expect("Json's bytes");
            let actual = serde_json::to_vec(&contact).expect("serde's bytes");
            assert_eq!(
                String::from_utf8_lossy(&actual),
                String::from_utf8_lossy(&expected)
            );
            let fast = SerdeJson(contact).into_response();
            assert_eq!(
                fast.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(<Json<Contact> as Payload>::CONTENT_TYPE.as_bytes())
            );
        }
    }

    #[test]
    fn link_keeps_the_filters_and_moves_the_cursor() {
        let params = [
            ("status", Some("open".to_owned())),
            ("lead_id", None),
            ("external_id", Some("a b&c".to_owned())),
        ];
        assert_eq!(
            next_link("/api/contacts", &params, 2, 2, Some(41)).as_deref(),
            Some(
                "</api/contacts?status=open&external_id=a%20b%26c&limit=2&after=41>; rel=\"next\""
            )
        );
        assert_eq!(next_link("/api/contacts", &params, 3, 2, Some(41)), None);
    }
}
