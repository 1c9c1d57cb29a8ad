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
use serde_json::Value;

use crate::error::ApiError;

/// The 201 of a registration: a [`Contact`] written by hand, byte for byte what
/// poem-openapi's `Json<Contact>` writes (a proptest checks it), and documented as it is.
/// (`Json<T>` first builds a `serde_json::Value` tree of the whole body, then serialises
/// it; a serde `Serialize` of the same struct was the step before this.) Every
/// registration answers one; through serde each of its keys and strings went through
/// `format_escaped_str` and the field dispatch on its own (~9 % of the HTTP side's
/// instructions, docs/benchmarks.md). The operator's name still goes through serde_json,
/// which owns its escaping. The payload is stored as the compact text of its JSON value
/// (`Payload::from_value`), which is what `Json<T>` would write for that value, so it is
/// copied as it is, once checked to be JSON (without building the value).
#[derive(Debug)]
pub(crate) struct ContactJson(Vec<u8>);

impl ContactJson {
    /// Writes `c`; fails only if stored payload text is not JSON, which the store rules
    /// out.
    pub(crate) fn new(c: &crm_core::Contact) -> Result<Self, ApiError> {
        serde_json::from_str::<serde::de::IgnoredAny>(c.payload.as_json())
            .map_err(|err| ApiError::internal("stored payload is not JSON", &err))?;
        let mut out = Vec::with_capacity(224 + c.payload.as_json().len());
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(num.format(c.id.get()).as_bytes());
        out.extend_from_slice(b",\"lead_id\":");
        out.extend_from_slice(num.format(c.lead_id.get()).as_bytes());
        out.extend_from_slice(b",\"source_id\":");
        out.extend_from_slice(num.format(c.source_id.get()).as_bytes());
        out.extend_from_slice(b",\"operator_id\":");
        match &c.operator {
            Some(operator) => out.extend_from_slice(num.format(operator.id.get()).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"operator\":");
        match &c.operator {
            Some(operator) => {
                out.extend_from_slice(b"{\"id\":");
                out.extend_from_slice(num.format(operator.id.get()).as_bytes());
                out.extend_from_slice(b",\"name\":");
                serde_json::to_writer(&mut out, &operator.name)
                    .map_err(|err| ApiError::internal("cannot write a name", &err))?;
                out.extend_from_slice(if operator.is_active {
                    b",\"is_active\":true}"
                } else {
                    b",\"is_active\":false}"
                });
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(match c.status {
            crm_core::ContactStatus::Open => b",\"status\":\"open\",\"payload\":",
            crm_core::ContactStatus::Closed => b",\"status\":\"closed\",\"payload\":",
        });
        out.extend_from_slice(c.payload.as_json().as_bytes());
        // RFC 3339 text is digits, '-', ':', '.', '+' and 'T': nothing to escape.
        out.extend_from_slice(b",\"created_at\":\"");
        out.extend_from_slice(c.created_at.to_rfc3339().as_bytes());
        out.extend_from_slice(b"\",\"closed_at\":");
        match c.closed_at {
            Some(at) => {
                out.push(b'"');
                out.extend_from_slice(at.to_rfc3339().as_bytes());
                out.extend_from_slice(b"\"}");
            }
            None => out.extend_from_slice(b"null}"),
        }
        Ok(Self(out))
    }
}

impl Payload for ContactJson {
    const CONTENT_TYPE: &'static str = <Json<Contact> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<Contact> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        Contact::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Contact::register(registry);
    }
}

impl IntoResponse for ContactJson {
    fn into_response(self) -> Response {
        Response::builder()
            .header(poem::http::header::CONTENT_TYPE, Self::CONTENT_TYPE)
            .body(self.0)
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
#[derive(Debug, Object)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum ContactStatus {
    /// Counts towards its operator's load.
    Open,
    /// Done.
    Closed,
}

/// One appeal of a lead through a source.
#[derive(Debug, Object)]
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
    created_at: DateTime<Utc>,
    /// When it was closed; `null` while open.
    #[oai(nullable)]
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
    use proptest::prelude::*;

    use super::*;

    /// A JSON value: every kind of scalar (numbers of each representation), nested
    /// arrays and objects, strings with escapes and non-ASCII.
    fn json_value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            "(?s).{0,8}".prop_map(Value::String),
        ];
        scalar.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("(?s).{0,4}", inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn time() -> impl Strategy<Value = DateTime<Utc>> {
        (
            0i64..4_102_444_800,
            prop_oneof![Just(0u32), 0u32..1_000_000_000],
        )
            .prop_map(|(secs, nanos)| Utc.timestamp_opt(secs, nanos).single().expect("a time"))
    }

    /// A contact as the core returns it: with and without operator and closing time,
    /// any name, any payload.
    fn core_contact() -> impl Strategy<Value = crm_core::Contact> {
        (
            (any::<i64>(), any::<i64>(), any::<i64>()),
            prop::option::of((any::<i64>(), "(?s).{0,12}", any::<bool>())),
            any::<bool>(),
            json_value(),
            time(),
            prop::option::of(time()),
        )
            .prop_map(
                |((id, lead, source), operator, open, payload, created_at, closed_at)| {
                    crm_core::Contact {
                        id: crm_core::ContactId(id),
                        lead_id: crm_core::LeadId(lead),
                        source_id: crm_core::SourceId(source),
                        operator: operator.map(|(id, name, is_active)| crm_core::OperatorSummary {
                            id: crm_core::OperatorId(id),
                            name,
                            is_active,
                        }),
                        status: if open {
                            crm_core::ContactStatus::Open
                        } else {
                            crm_core::ContactStatus::Closed
                        },
                        payload: crm_core::Payload::from_value(&payload).expect("a small payload"),
                        created_at,
                        closed_at,
                    }
                },
            )
    }

    proptest::proptest! {
        /// The registration's 201 is byte for byte what poem-openapi's `Json<Contact>`
        /// sends for the same contact, with the same content type.
        #[test]
        fn contact_json_is_byte_for_byte_poem_openapi_json(contact in core_contact()) {
            let fast = ContactJson::new(&contact).expect("written");
            let expected = serde_json::to_vec(
                &Contact::try_from(contact).expect("converted").to_json(),
            )
            .expect("Json's bytes");
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&fast.0),
                String::from_utf8_lossy(&expected)
            );
            let response = fast.into_response();
            proptest::prop_assert_eq!(
                response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
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
