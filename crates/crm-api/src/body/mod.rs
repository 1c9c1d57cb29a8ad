//! JSON request bodies: one wire type per body, parsed by poem-openapi, then turned into
//! crm-core's values by `TryFrom`, which names every problem with its field path.
//!
//! Each field of a wire type is a [`Field`]: poem-openapi fills it from any JSON value, one
//! of the wrong type included, so that one 422 names every offending field
//! (`operators[1].weight`), as pydantic did, rather than the first one failing the whole
//! body. A field's schema in the document (its limits, its default) comes from a [`Rule`]
//! built from crm-core's constants, the same ones the conversion checks against. Only a
//! body that is not JSON fails while parsing: 400 `malformed_json`.

use std::{borrow::Cow, fmt, io, marker::PhantomData};

use crm_core::ValueError;
use http_body_util::{BodyExt, LengthLimitError, Limited, combinators::BoxBody};
use poem::{Request, RequestBody};
use poem_openapi::{
    error::ParseRequestPayloadError,
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::{ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::error::{ApiError, FieldError, payload_too_large};

mod rules;

pub(crate) use rules::{
    CodeRule, DefaultFalse, DefaultStrategy, DefaultTrue, LimitRule, NameRule, Optional, PaceRule,
    PicksRule, Plain, Rule, ScopeRule, SeedRule, StrategyRule, WeightRule, verbatim_pattern,
};

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A body of wire type `W`, read as JSON in UTF-8 (any other charset is 415), at most
/// [`MAX_BODY_BYTES`] long however it is sent (413).
pub(crate) struct Body<W>(pub(crate) W);

/// One field of a body as sent.
pub(crate) enum Field<T, R = Plain> {
    /// Left out.
    Missing,
    /// `null`.
    Null,
    /// A value of the field's JSON type.
    Given(T),
    /// A value of another JSON type.
    Mistyped,
    /// Never built: carries the rule, which is only the field's schema.
    #[doc(hidden)]
    _Rule(PhantomData<R>, std::convert::Infallible),
}

/// A JSON type a [`Field`] can hold.
pub(crate) trait Wire: Type + ToJSON + Sized {
    /// What a value of another type is told.
    const EXPECTED: &'static str;

    /// The value, if it has this type.
    fn from_json(value: Value) -> Option<Self>;
}

impl Wire for i64 {
    const EXPECTED: &'static str = "must be an integer";

    fn from_json(value: Value) -> Option<Self> {
        value.as_i64()
    }
}

impl Wire for bool {
    const EXPECTED: &'static str = "must be a boolean";

    fn from_json(value: Value) -> Option<Self> {
        value.as_bool()
    }
}

/// A JSON string, exactly (poem-openapi's `String` also takes numbers and booleans).
impl Wire for String {
    const EXPECTED: &'static str = "must be a string";

    fn from_json(value: Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Any JSON value.
impl Wire for Value {
    const EXPECTED: &'static str = "must be JSON";

    fn from_json(value: Value) -> Option<Self> {
        Some(value)
    }
}

/// An array whose items are read one by one, so each bad item is named by its index.
impl<T: Wire, R: Rule> Wire for Vec<Field<T, R>> {
    const EXPECTED: &'static str = "must be an array";

    fn from_json(value: Value) -> Option<Self> {
        match value {
            Value::Array(items) => Some(items.into_iter().map(Field::read).collect()),
            _ => None,
        }
    }
}

/// Implements [`Wire`] for wire types that are JSON objects (their fields are [`Field`]s,
/// so any object parses).
macro_rules! wire_object {
    ($($ty:ty),+) => {$(
        impl $crate::body::Wire for $ty {
            const EXPECTED: &'static str = "must be an object";

            fn from_json(value: ::serde_json::Value) -> Option<Self> {
                if !value.is_object() {
                    return None;
                }
                <Self as ::poem_openapi::types::ParseFromJSON>::parse_from_json(Some(value)).ok()
            }
        }
    )+};
}
pub(crate) use wire_object;

impl<T: fmt::Debug, R> fmt::Debug for Field<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("Missing"),
            Self::Null => f.write_str("Null"),
            Self::Given(value) => f.debug_tuple("Given").field(value).finish(),
            Self::Mistyped => f.write_str("Mistyped"),
            Self::_Rule(_, never) => match *never {},
        }
    }
}

impl<T: Wire, R: Rule> Field<T, R> {
    fn read(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            value => T::from_json(value).map_or(Self::Mistyped, Self::Given),
        }
    }
}

impl<T: Wire, R: Rule> Type for Field<T, R> {
    const IS_REQUIRED: bool = R::REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        R::schema::<T>()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        match self {
            Self::Given(value) => value.as_raw_value(),
            _ => None,
        }
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match self {
            Self::Given(value) => value.raw_element_iter(),
            _ => Box::new(std::iter::empty()),
        }
    }
}

impl<T: Wire, R: Rule> ParseFromJSON for Field<T, R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(value.map_or(Self::Missing, Self::read))
    }
}

impl<T: Wire, R: Rule> ToJSON for Field<T, R> {
    fn to_json(&self) -> Option<Value> {
        match self {
            Self::Given(value) => value.to_json(),
            Self::Null => Some(Value::Null),
            _ => None,
        }
    }
}

/// Collects the problems of one body, each with its field path, into one 422.
#[derive(Default)]
pub(crate) struct Check(Vec<FieldError>);

impl Check {
    /// Records a problem with the field at `at`.
    pub(crate) fn fail(&mut self, at: impl fmt::Display, message: impl Into<String>) {
        self.0.push(FieldError {
            field: at.to_string(),
            message: message.into(),
        });
    }

    /// A field that must be given: its value through `parse`.
    pub(crate) fn required<T: Wire, R: Rule, U>(
        &mut self,
        at: impl fmt::Display,
        field: Field<T, R>,
        parse: impl FnOnce(T) -> Result<U, ValueError>,
    ) -> Option<U> {
        match field {
            Field::Missing | Field::Null => {
                self.fail(at, "field required");
                None
            }
            field => self.given(at, field, parse),
        }
    }

    /// A field that may be left out but, when given, must not be `null`.
    pub(crate) fn optional<T: Wire, R: Rule, U>(
        &mut self,
        at: impl fmt::Display,
        field: Field<T, R>,
        parse: impl FnOnce(T) -> Result<U, ValueError>,
    ) -> Option<U> {
        match field {
            Field::Missing => None,
            Field::Null => {
                self.fail(at, "must not be null");
                None
            }
            field => self.given(at, field, parse),
        }
    }

    /// A field that may be left out (`None`) or `null` (`Some(None)`).
    #[allow(clippy::option_option)]
    pub(crate) fn nullable<T: Wire, R: Rule, U>(
        &mut self,
        at: impl fmt::Display,
        field: Field<T, R>,
        parse: impl FnOnce(T) -> Result<U, ValueError>,
    ) -> Option<Option<U>> {
        match field {
            Field::Missing => None,
            Field::Null => Some(None),
            field => self.given(at, field, parse).map(Some),
        }
    }

    fn given<T: Wire, R: Rule, U>(
        &mut self,
        at: impl fmt::Display,
        field: Field<T, R>,
        parse: impl FnOnce(T) -> Result<U, ValueError>,
    ) -> Option<U> {
        match field {
            Field::Given(value) => parse(value).map_err(|e| self.fail(at, e.to_string())).ok(),
            _ => {
                self.fail(at, T::EXPECTED);
                None
            }
        }
    }

    /// The value built from the fields, or a 422 naming every problem recorded.
    pub(crate) fn finish<V>(self, value: impl FnOnce() -> Option<V>) -> Result<V, ApiError> {
        match value() {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(ApiError::validation(self.0)),
        }
    }
}

impl<W: Type> Payload for Body<W> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        let mut parts = content_type.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        let json = essence.eq_ignore_ascii_case("application/json")
            || essence
                .rsplit_once('+')
                .is_some_and(|(ty, suffix)| ty.starts_with("application/") && suffix == "json");
        json && parts.all(is_utf8_or_not_charset)
    }

    fn schema_ref() -> MetaSchemaRef {
        W::schema_ref()
    }

    fn register(registry: &mut Registry) {
        W::register(registry);
    }
}

impl<W: Wire + ParseFromJSON> ParsePayload for Body<W> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self(parse(read(body).await?.as_ref())?))
    }
}

/// The whole body, at most [`MAX_BODY_BYTES`] (413 beyond).
pub(crate) async fn read(body: &mut RequestBody) -> poem::Result<impl AsRef<[u8]> + use<>> {
    // Limited while it is read: a body that declares no length is cut off at the limit.
    let body: BoxBody<_, io::Error> = body.take()?.into();
    Ok(Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|err| {
            if err.is::<LengthLimitError>() {
                poem::Error::from(payload_too_large())
            } else {
                poem::Error::from(poem::error::ReadBodyError::Io(io::Error::other(err)))
            }
        })?
        .to_bytes())
}

poem_openapi::impl_apirequest_for_payload!(Body<W>, W: Wire + ParseFromJSON);

/// Parses a whole body: syntax errors are 400, a body that is not an object is 422.
pub(crate) fn parse<W: Wire>(bytes: &[u8]) -> poem::Result<W> {
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(bytes).map_err(|err| ParseRequestPayloadError {
            reason: format!("the body is not valid JSON: {err}"),
        })?
    };
    match Field::<W>::read(value) {
        Field::Given(wire) => Ok(wire),
        Field::Null => Err(ApiError::invalid("body", "a JSON object is required").into()),
        _ => Err(ApiError::invalid("body", "must be a JSON object").into()),
    }
}

/// Whether a media type parameter (`charset=utf-8`) allows the body to be read as UTF-8,
/// the only encoding of JSON (RFC 8259): any parameter but `charset` does, and `charset`
/// only when it is UTF-8 (any case, quoted or not). A body declared as Latin-1 is answered
/// 415 rather than read as something it says it is not.
fn is_utf8_or_not_charset(parameter: &str) -> bool {
    let Some((name, value)) = parameter.split_once('=') else {
        return true;
    };
    if !name.trim().eq_ignore_ascii_case("charset") {
        return true;
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    value.eq_ignore_ascii_case("utf-8")
}

#[cfg(test)]
mod tests {
    use crm_core::Weight;
    use poem_openapi::Object;
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    /// A body with one required, one optional and one list field.
    #[derive(Debug, Object)]
    struct Probe {
        a: Field<i64>,
        b: Field<bool, Optional>,
        items: Field<Vec<Field<Item>>>,
    }

    #[derive(Debug, Object)]
    struct Item {
        w: Field<i64, WeightRule>,
    }

    wire_object!(Probe, Item);

    /// The paths of the fields a body is refused for, or none when it is valid.
    fn refused(body: &Value) -> Vec<String> {
        let probe = match parse::<Probe>(body.to_string().as_bytes()) {
            Ok(probe) => probe,
            Err(err) => return vec![format!("{}", err.status())],
        };
        let mut check = Check::default();
        check.required("a", probe.a, Ok);
        check.optional("b", probe.b, Ok);
        for (i, item) in check
            .required("items", probe.items, Ok)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(item) = check.required(format_args!("items[{i}]"), item, Ok) {
                check.required(format_args!("items[{i}].w"), item.w, Weight::new);
            }
        }
        match check.finish(|| Some(())) {
            Ok(()) => Vec::new(),
            Err(err) => err.field_errors().iter().map(|e| e.field.clone()).collect(),
        }
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        assert_eq!(
            refused(&json!({"a": "1", "b": null, "items": [{"w": 0}, 3, {}, {"w": true}]})),
            [
                "a",
                "b",
                "items[0].w",
                "items[1]",
                "items[2].w",
                "items[3].w"
            ]
        );
        assert_eq!(refused(&json!({"items": {}})), ["a", "items"]);
    }

    #[test]
    fn valid_bodies_pass_and_unknown_fields_are_ignored() {
        assert!(refused(&json!({"a": 5, "items": [{"w": 2}], "zzz": 1})).is_empty());
        assert!(refused(&json!({"a": 5, "b": false, "items": []})).is_empty());
    }

    #[test]
    fn only_a_body_that_is_not_json_fails_to_parse() {
        let status = |bytes: &[u8]| parse::<Probe>(bytes).err().map(|e| e.status().as_u16());
        assert_eq!(status(b"{\"a\": "), Some(400));
        let not_an_object = parse::<Probe>(b"[1]").err().map(ApiError::from_poem);
        assert_eq!(
            not_an_object.map(|e| e.code()),
            Some(ErrorCode::ValidationFailed)
        );
        let empty = parse::<Probe>(b" \n").err().map(ApiError::from_poem);
        assert_eq!(empty.map(|e| e.code()), Some(ErrorCode::ValidationFailed));
    }

    #[test]
    fn json_is_accepted_in_utf_8_only() {
        let accepts = <Body<Probe> as Payload>::check_content_type;
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/json; profile=x",
            "application/problem+json; charset=utf-8",
        ] {
            assert!(accepts(ok), "{ok}");
        }
        for refused in [
            "application/json; charset=latin1",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-16",
            "application/json; charset=utf8",
            "application/json; charset=",
            "text/plain; charset=utf-8",
        ] {
            assert!(!accepts(refused), "{refused}");
        }
    }
}
