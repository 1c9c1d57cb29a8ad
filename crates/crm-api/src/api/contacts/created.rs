//! The 201 of a registration, written by hand: the one fast path of the response side,
//! used by `POST /api/contacts` alone (its measurement: docs/benchmarks.md, "Changes and
//! their effect"). Every other answer is poem-openapi's `Json`.

use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use crate::{dto::Contact, error::ApiError};

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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use poem::http::header::CONTENT_TYPE;
    use poem_openapi::types::ToJSON;
    use proptest::prelude::*;
    use serde_json::Value;

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
}
