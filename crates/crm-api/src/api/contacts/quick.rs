//! The one measured fast path the Simplify issue allows, for `POST /api/contacts` alone,
//! both ways (docs/benchmarks.md, "2026-12-06 evening"):
//!
//! - **The body.** A registration body that is valid as sent is read by serde straight into
//!   its fields, without the `serde_json::Value` tree (an ordered map of the body's keys)
//!   that the stock path builds first; anything else (a mistake, a duplicate key, a `null`
//!   where a value is required) goes the stock way, [`crate::body::parse`] and
//!   `TryFrom<CreateContact>`, which names every problem. So the fast path only ever
//!   answers what the stock path would, with the same `NewContact`; a property test holds
//!   the two together.
//! - **The 201.** [`ContactJson`] writes the answer with serde from the stored contact,
//!   where the stock path builds a `Value` tree of the whole answer
//!   ([`crate::dto::Contact`]) before writing it, the payload parsed into a third. The
//!   payload goes out as the stored text, between the fields serde writes before and after
//!   it. (Not through serde_json's `raw_value` feature: it changes how every `Value` in the
//!   process is parsed, reading an object with its private key as the JSON text inside it,
//!   around the nesting limit.) Byte for byte the same answer (a property test), and the
//!   same schema in the document.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactStatus, ExternalLeadId, NewContact, Payload, SourceCode, SourceId, SourceRef,
};
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{Json, ParsePayload, Payload as OpenApiPayload},
    registry::{MetaSchemaRef, Registry},
};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, IgnoredAny},
};
use serde_json::Value;

use super::CreateContact;
use crate::{
    body::{self, Body},
    error::ApiError,
};

/// A registration body: read by the fast path, or by the stock one.
pub(super) enum ContactBody {
    /// Valid as sent.
    Quick(NewContact),
    /// For the stock conversion, which names every problem.
    Stock(CreateContact),
}

impl OpenApiPayload for ContactBody {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        <Body<CreateContact> as OpenApiPayload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Body<CreateContact> as OpenApiPayload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Body<CreateContact> as OpenApiPayload>::register(registry);
    }
}

impl ParsePayload for ContactBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body::read(body).await?;
        let bytes = bytes.as_ref();
        Ok(match quick(bytes) {
            Some(new) => Self::Quick(new),
            None => Self::Stock(body::parse(bytes)?),
        })
    }
}

impl_apirequest_for_payload!(ContactBody);

/// The body's fields when it is valid as sent; `None` sends it the stock way.
fn quick(bytes: &[u8]) -> Option<NewContact> {
    // serde's derive also reads a struct from an array (`["lead", 1]`); the stock path
    // refuses anything but an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let wire: Wire<'_> = serde_json::from_slice(bytes).ok()?;
    let source = match (wire.source_id, wire.source_code) {
        (Some(id), None) => SourceRef::Id(SourceId(id)),
        (None, Some(code)) => SourceRef::Code(SourceCode::parse(&code).ok()?),
        _ => return None,
    };
    Some(NewContact {
        external_lead_id: ExternalLeadId::parse(&wire.external_lead_id.0).ok()?,
        source,
        payload: match wire.payload {
            Some(value) => Payload::from_value(&value).ok()?,
            None => Payload::null(),
        },
    })
}

/// `CreateContact` for serde: a missing field or `null` is `None` (as the stock path reads
/// them); an unknown field or a duplicate key fails, and the stock path decides (it passes
/// unknown fields over, but only after parsing them under serde_json's nesting limit, which
/// serde's skipping of an unknown field does not apply).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    external_lead_id: LeadId<'a>,
    #[serde(default)]
    source_id: Option<i64>,
    #[serde(default, borrow)]
    source_code: Option<Cow<'a, str>>,
    #[serde(default)]
    payload: Option<Value>,
}

/// A lead's external id: a string, or an integer as its decimal text.
struct LeadId<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for LeadId<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> de::Visitor<'de> for Visitor {
            type Value = LeadId<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LeadId(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LeadId(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(LeadId(Cow::Owned(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LeadId(Cow::Owned(v.to_string())))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LeadId(Cow::Owned(v.to_string())))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// The 201's body: a stored contact, written as [`crate::dto::Contact`] would be.
#[derive(Debug)]
pub(super) struct ContactJson(Contact);

impl TryFrom<Contact> for ContactJson {
    type Error = ApiError;

    /// Fails only if stored payload text is not JSON, which the store rules out (checked
    /// without building it: [`IgnoredAny`]).
    fn try_from(contact: Contact) -> Result<Self, ApiError> {
        serde_json::from_str::<IgnoredAny>(contact.payload.as_json())
            .map_err(|err| ApiError::internal("stored payload is not JSON", &err))?;
        Ok(Self(contact))
    }
}

impl OpenApiPayload for ContactJson {
    const CONTENT_TYPE: &'static str = <Json<crate::dto::Contact> as OpenApiPayload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<crate::dto::Contact> as OpenApiPayload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Json<crate::dto::Contact> as OpenApiPayload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<crate::dto::Contact> as OpenApiPayload>::register(registry);
    }
}

impl IntoResponse for ContactJson {
    /// The fields before the payload and those after it, each written by serde, with the
    /// stored payload's text between them: the store wrote that text with serde_json from
    /// a parsed value, compact, as the stock path would write it again.
    fn into_response(self) -> Response {
        let c = &self.0;
        let head = serde_json::to_vec(&Head {
            id: c.id.get(),
            lead_id: c.lead_id.get(),
            source_id: c.source_id.get(),
            operator_id: c.operator.as_ref().map(|o| o.id.get()),
            operator: c.operator.as_ref().map(|o| OperatorView {
                id: o.id.get(),
                name: &o.name,
                is_active: o.is_active,
            }),
            status: c.status,
        });
        let tail = serde_json::to_vec(&Tail {
            created_at: Rfc3339(c.created_at),
            closed_at: c.closed_at.map(Rfc3339),
            waiting_ahead: c.waiting_ahead,
        });
        let (Ok(mut body), Ok(tail)) = (head, tail) else {
            return poem::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let payload = c.payload.as_json();
        body.reserve(payload.len() + tail.len() + 12);
        // `{…head…}` becomes `{…head…,"payload":…,…tail…}`.
        body.pop();
        body.extend_from_slice(b",\"payload\":");
        body.extend_from_slice(payload.as_bytes());
        body.push(b',');
        body.extend_from_slice(tail.get(1..).unwrap_or_default());
        Response::builder()
            .header(poem::http::header::CONTENT_TYPE, Self::CONTENT_TYPE)
            .body(body)
    }
}

/// [`crate::dto::Contact`]'s fields before `payload`, in its order.
#[derive(Serialize)]
struct Head<'a> {
    id: i64,
    lead_id: i64,
    source_id: i64,
    operator_id: Option<i64>,
    operator: Option<OperatorView<'a>>,
    status: ContactStatus,
}

/// [`crate::dto::Contact`]'s fields after `payload`, in its order.
#[derive(Serialize)]
struct Tail {
    created_at: Rfc3339,
    closed_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_ahead: Option<u64>,
}

/// [`crate::dto::OperatorSummary`]'s fields, in its order.
#[derive(Serialize)]
struct OperatorView<'a> {
    id: i64,
    name: &'a str,
    is_active: bool,
}

/// A time as poem-openapi writes one (`to_rfc3339`: `+00:00`, not chrono's own `Z`).
struct Rfc3339(DateTime<Utc>);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// What the stock path makes of `bytes`: the contact, or `None` for any refusal.
    fn stock(bytes: &[u8]) -> Option<NewContact> {
        let wire: CreateContact = body::parse(bytes).ok()?;
        NewContact::try_from(wire).ok()
    }

    fn field() -> impl Strategy<Value = Option<Value>> {
        prop::option::of(prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e3f64..1e3).prop_map(|f| json!(f)),
            any::<bool>().prop_map(Value::from),
            "[a-zA-Z0-9_.\\- \\t\u{0}\u{1f}é]{0,6}".prop_map(Value::from),
            Just(json!({"text": "hi", "n": [1, 2.5, null]})),
            Just(json!([])),
        ])
    }

    /// A body with each field left out, of the right type, or of a wrong one; sometimes an
    /// unknown field, a duplicate key, or extra whitespace.
    fn bodies() -> impl Strategy<Value = String> {
        (
            field(),
            field(),
            field(),
            field(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(lead, id, code, payload, unknown, duplicate, spaced)| {
                let mut parts = Vec::new();
                for (name, value) in [
                    ("external_lead_id", lead),
                    ("source_id", id),
                    ("source_code", code),
                    ("payload", payload),
                ] {
                    if let Some(value) = value {
                        parts.push(format!("\"{name}\":{value}"));
                    }
                }
                if unknown {
                    parts.push("\"extra\":{\"deep\":[1,{}]}".to_owned());
                }
                if duplicate && let Some(first) = parts.first().cloned() {
                    parts.push(first);
                }
                let sep = if spaced { " ,\n " } else { "," };
                format!("{{{}}}", parts.join(sep))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// Whatever the fast path accepts, the stock path accepts as the same contact.
        #[test]
        fn the_fast_path_answers_only_what_the_stock_path_would(body in bodies()) {
            if let Some(fast) = quick(body.as_bytes()) {
                prop_assert_eq!(Some(fast), stock(body.as_bytes()), "{}", body);
            }
        }
    }

    /// The bodies clients send take the fast path.
    #[test]
    fn valid_bodies_take_the_fast_path() {
        for body in [
            json!({"external_lead_id": "tg-1", "source_id": 1, "payload": "hi"}),
            json!({"external_lead_id": 42, "source_code": "tg", "payload": {"a": [1, 2]}}),
            json!({"external_lead_id": "x", "source_id": 3, "source_code": null}),
            json!({"external_lead_id": "x", "source_code": "web", "payload": null}),
        ] {
            let bytes = body.to_string();
            let fast = quick(bytes.as_bytes());
            assert!(fast.is_some(), "{body}");
            assert_eq!(fast, stock(bytes.as_bytes()), "{body}");
        }
        for refused in [
            // The stock path passes it over, after checking its nesting.
            json!({"external_lead_id": "x", "source_code": "web", "extra": 1}),
            // The stock path wants an object.
            json!(["lead-1", 1]),
            json!(["x", null, "tg", {"a": 1}]),
            json!({"external_lead_id": null, "source_id": 1}),
            json!({"external_lead_id": "x", "source_id": 1, "source_code": "tg"}),
            json!({"external_lead_id": "x"}),
            json!({"external_lead_id": 1.5, "source_id": 1}),
        ] {
            assert!(quick(refused.to_string().as_bytes()).is_none(), "{refused}");
        }
    }

    /// Any JSON value a payload may hold, nested a little.
    fn payload() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            r#"[a-zA-Z0-9 "\\\x00\x1f\x7fé€😀/]{0,8}"#.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(("[a-z\"é ]{0,4}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    async fn body_of(response: Response) -> (Option<String>, Vec<u8>) {
        let content_type = response
            .headers()
            .get(poem::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().into_vec().await.expect("a body");
        (content_type, body)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The 201 written by serde is byte for byte poem-openapi's of `dto::Contact`.
        #[test]
        fn the_answer_is_the_stock_answer(
            payload in payload(),
            operator in prop::option::of((any::<i64>(), r#"[a-zA-Z é"\\]{0,12}"#, any::<bool>())),
            closed in any::<bool>(),
            seconds in 0i64..4_000_000_000,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
            waiting_ahead in prop::option::of(0u64..=100),
            id in any::<i64>(),
        ) {
            use poem_openapi::types::ToJSON as _;
            let at = DateTime::from_timestamp(seconds, nanos).expect("a time");
            let contact = Contact {
                id: crm_core::ContactId(id),
                lead_id: crm_core::LeadId(id / 2),
                source_id: SourceId(id / 3),
                operator: operator.map(|(id, name, is_active)| crm_core::OperatorSummary {
                    id: crm_core::OperatorId(id),
                    name,
                    is_active,
                }),
                status: if closed { ContactStatus::Closed } else { ContactStatus::Open },
                payload: Payload::from_value(&payload).expect("a payload"),
                created_at: at,
                closed_at: closed.then_some(at),
                waiting_ahead,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            let stock = crate::dto::Contact::try_from(contact.clone()).expect("stock");
            let stock = runtime.block_on(body_of(poem::web::Json(stock.to_json()).into_response()));
            let fast = runtime.block_on(body_of(
                ContactJson::try_from(contact).expect("fast").into_response(),
            ));
            prop_assert_eq!(
                String::from_utf8_lossy(&fast.1),
                String::from_utf8_lossy(&stock.1)
            );
            prop_assert_eq!(fast, stock);
        }
    }
}
