//! JSON request bodies, read field by field straight into the core's validated commands.
//!
//! poem-openapi's own `Json<T>` reports a syntax error and a wrong field type alike as one
//! 400 that names no field, and its `String` takes numbers and booleans. So each body type
//! here derives `Object` only for its schema in the OpenAPI document, and [`FromBody`]
//! parses it: every problem is collected with its field path (`operators[1].weight`) so one
//! 422 names them all, as pydantic did. Unknown fields are ignored.

use std::{borrow::Cow, fmt, fmt::Write as _, io};

use crm_core::{ExternalLeadId, MaxActiveContacts, Name, SourceCode, ValueError, Weight};
use http_body_util::{BodyExt, LengthLimitError, Limited, combinators::BoxBody};
use poem::{Request, RequestBody};
use poem_openapi::{
    payload::{ParsePayload, Payload as OaiPayload},
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError, payload_too_large};

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Exactly the characters Rust's `str::trim` removes (Unicode `White_Space`), as ranges.
const WHITESPACE: [(char, char); 10] = [
    ('\u{9}', '\u{d}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// The control characters no identifier, name, code or label may hold (crm-core's
/// `is_control`: U+0000..=U+001F and U+007F), as the inside of a regex character class.
const CONTROLS: &str = "\\u0000-\\u001F\\u007F";

/// The ranges of [`WHITESPACE`] as the inside of a regex character class.
fn whitespace_ranges() -> String {
    let mut ranges = String::new();
    for (first, last) in WHITESPACE {
        let _ = write!(ranges, "\\u{:04X}", u32::from(first));
        if last != first {
            let _ = write!(ranges, "-\\u{:04X}", u32::from(last));
        }
    }
    ranges
}

/// A JSON Schema pattern for text kept exactly as sent: no control character anywhere,
/// and not only whitespace (one character outside [`WHITESPACE`], spelled out rather than
/// `\S`, whose meaning differs between regex dialects and from `str::trim`, so the
/// document and the server agree on every string).
pub(crate) fn verbatim_pattern() -> String {
    format!(
        "^[^{CONTROLS}]*[^{}{CONTROLS}][^{CONTROLS}]*$",
        whitespace_ranges()
    )
}

/// A JSON Schema pattern for "1..=`max` characters once trimmed, no control character
/// left": any whitespace, then one character that is neither whitespace nor a control, or
/// two with at most `max - 2` characters that are not controls between them, then any
/// whitespace. (`maxLength` would count the whitespace trimming removes.)
fn trimmed_pattern(max: usize) -> String {
    let ws = format!("[{}]", whitespace_ranges());
    let text = format!("[^{}{CONTROLS}]", whitespace_ranges());
    format!(
        "^{ws}*{text}(?:[^{CONTROLS}]{{0,{}}}{text})?{ws}*$",
        max.saturating_sub(2)
    )
}

/// The schema of a display name (or a key's label): 1..=255 characters once trimmed,
/// stated as a pattern. [`name`] does the parsing; this type exists for the document.
#[derive(Debug)]
pub(crate) struct NameText(String);

impl Type for NameText {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "name_text".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(trimmed_pattern(Name::MAX_CHARS)),
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

impl ParseFromJSON for NameText {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        String::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

impl ToJSON for NameText {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A JSON body parsed by `T`'s [`FromBody`] into `T::Output`.
pub(crate) struct JsonBody<T: FromBody>(pub(crate) T::Output);

/// A body schema that knows how to read itself from a JSON object.
pub(crate) trait FromBody: Type {
    /// The validated command it becomes.
    type Output: Send;

    /// Reads the fields; returns `None` only after recording at least one error.
    fn from_fields(f: &mut Fields<'_>) -> Option<Self::Output>;
}

/// The fields of one JSON object, with the path to it and the errors found so far.
pub(crate) struct Fields<'a> {
    obj: Object<'a>,
    prefix: String,
    errors: &'a mut Vec<FieldError>,
}

/// A JSON object to read fields from.
#[derive(Clone, Copy)]
enum Object<'a> {
    /// The body itself, as its members were sent (see [`Top`]).
    Members(&'a [(String, Value)]),
    /// An object inside it.
    Map(&'a Map<String, Value>),
}

impl<'a> Object<'a> {
    fn get(self, name: &str) -> Option<&'a Value> {
        match self {
            // From the end: a repeated key means its last value, as in a `Map`.
            Self::Members(members) => members
                .iter()
                .rev()
                .find_map(|(key, value)| (key == name).then_some(value)),
            Self::Map(map) => map.get(name),
        }
    }
}

/// A whole body: its members if it is an object. Read member by member into a list
/// rather than into a `serde_json::Map`, whose keys are hashed with SipHash on insert and
/// on every lookup (~5 % of the HTTP side's instructions per registration,
/// docs/benchmarks.md); a body has a handful of fields, and a lookup scans them.
enum Top {
    Object(Vec<(String, Value)>),
    /// An array, string, number, boolean or `null`.
    Other,
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut members = Vec::with_capacity(4);
        while let Some(member) = map.next_entry::<String, Value>()? {
            members.push(member);
        }
        Ok(Top::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        // Read as values, not skipped: a number out of range is malformed JSON here too.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Top::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top, E> {
        Ok(Top::Other)
    }
}

impl<'a> Fields<'a> {
    /// The raw value of a field, if present (`null` included).
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name)
    }

    /// Records an error for a field of this object.
    pub(crate) fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: format!("{}{name}", self.prefix),
            message: message.into(),
        });
    }

    /// Records `result`'s error, if any, against `name`.
    pub(crate) fn check<T>(&mut self, name: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.fail(name, message)).ok()
    }

    /// A field that must be present and not `null`.
    pub(crate) fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.get(name) {
            None | Some(Value::Null) => {
                self.fail(name, "field required");
                None
            }
            Some(value) => self.check(name, parse(value)),
        }
    }

    /// A field that may be left out but, when given, must not be `null`.
    pub(crate) fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.get(name)? {
            Value::Null => {
                self.fail(name, "must not be null");
                None
            }
            value => self.check(name, parse(value)),
        }
    }

    /// A required array of objects, each read by `item` with its own field paths.
    pub(crate) fn list<T>(
        &mut self,
        name: &str,
        mut item: impl FnMut(&mut Fields<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let values = self.required(name, |v| v.as_array().ok_or("must be an array".into()))?;
        let mut items = Vec::with_capacity(values.len());
        let mut ok = true;
        for (i, value) in values.iter().enumerate() {
            let path = format!("{name}[{i}]");
            let Some(obj) = value.as_object() else {
                self.fail(&path, "must be an object");
                ok = false;
                continue;
            };
            let mut fields = Fields {
                obj: Object::Map(obj),
                prefix: format!("{}{path}.", self.prefix),
                errors: &mut *self.errors,
            };
            match item(&mut fields) {
                Some(parsed) => items.push(parsed),
                None => ok = false,
            }
        }
        ok.then_some(items)
    }
}

impl<T: FromBody> OaiPayload for JsonBody<T> {
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
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: FromBody> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        // Collected as the chunks arrive (one, for a small body: no copy), rather than
        // through poem's `into_bytes_limit`, which copies every body through a zeroed 4 KiB
        // buffer (~6 % of the HTTP side's instructions per registration, docs/benchmarks.md).
        let body: BoxBody<_, io::Error> = body.take()?.into();
        let bytes = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<LengthLimitError>() {
                    poem::Error::from(payload_too_large())
                } else {
                    poem::Error::from(poem::error::ReadBodyError::Io(io::Error::other(err)))
                }
            })?
            .to_bytes();
        Ok(Self(parse::<T>(&bytes)?))
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: FromBody);

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

/// Parses a whole body: syntax errors are 400, everything else 422.
fn parse<T: FromBody>(bytes: &[u8]) -> Result<T::Output, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("body", "a JSON object is required"));
    }
    let top: Top = serde_json::from_slice(bytes).map_err(malformed)?;
    let Top::Object(members) = &top else {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    };
    read::<T>(Object::Members(members))
}

/// A body that is not JSON.
fn malformed(err: serde_json::Error) -> ApiError {
    ApiError::new(
        crate::error::ErrorCode::MalformedJson,
        format!("the body is not valid JSON: {err}"),
    )
}

/// Reads `obj` as `T`: its output, or a 422 naming every problem found.
fn read<T: FromBody>(obj: Object<'_>) -> Result<T::Output, ApiError> {
    let mut errors = Vec::new();
    let output = T::from_fields(&mut Fields {
        obj,
        prefix: String::new(),
        errors: &mut errors,
    });
    match output {
        Some(output) if errors.is_empty() => Ok(output),
        _ => Err(ApiError::validation(errors)),
    }
}

/// A JSON integer in the `i64` range.
pub(crate) fn integer(value: &Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| "must be an integer".to_owned())
}

/// A JSON boolean.
pub(crate) fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "must be a boolean".to_owned())
}

/// A JSON string, exactly: numbers and booleans are not text.
pub(crate) fn string(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| "must be a string".to_owned())
}

/// A display name.
pub(crate) fn name(value: &Value) -> Result<Name, String> {
    checked(Name::parse(string(value)?))
}

/// A source code.
pub(crate) fn source_code(value: &Value) -> Result<SourceCode, String> {
    checked(SourceCode::parse(string(value)?))
}

/// An operator's limit.
pub(crate) fn max_active_contacts(value: &Value) -> Result<MaxActiveContacts, String> {
    checked(MaxActiveContacts::new(integer(value)?))
}

/// A weight.
pub(crate) fn weight(value: &Value) -> Result<Weight, String> {
    checked(Weight::new(integer(value)?))
}

/// A lead's external id: a string as sent, or a JSON integer as its decimal text.
pub(crate) fn external_lead_id(value: &Value) -> Result<ExternalLeadId, String> {
    match value {
        Value::String(s) => checked(ExternalLeadId::parse(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            checked(ExternalLeadId::parse(&n.to_string()))
        }
        _ => Err("must be a string or an integer".to_owned()),
    }
}

fn checked<T>(result: Result<T, ValueError>) -> Result<T, String> {
    result.map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// A body with one required, one optional and one list field.
    #[derive(Object)]
    struct Probe {
        a: i64,
        b: Option<bool>,
        items: Vec<i64>,
    }

    impl FromBody for Probe {
        type Output = (i64, Option<bool>, Vec<i64>);

        fn from_fields(f: &mut Fields<'_>) -> Option<Self::Output> {
            let a = f.required("a", integer);
            let b = f.optional("b", boolean);
            let items = f.list("items", |f| f.required("w", weight).map(Weight::get));
            Some((a?, b, items?))
        }
    }

    fn fields(body: Value) -> Vec<String> {
        match parse::<Probe>(body.to_string().as_bytes()) {
            Ok(_) => Vec::new(),
            Err(err) => err.field_errors().iter().map(|e| e.field.clone()).collect(),
        }
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        assert_eq!(
            fields(json!({"a": "1", "b": null, "items": [{"w": 0}, 3, {}]})),
            ["a", "b", "items[0].w", "items[1]", "items[2].w"]
        );
    }

    #[test]
    fn valid_bodies_pass_and_unknown_fields_are_ignored() {
        let out = parse::<Probe>(br#"{"a": 5, "items": [{"w": 2}], "zzz": 1}"#);
        assert_eq!(out.ok(), Some((5, None, vec![2])));
    }

    #[test]
    fn syntax_errors_are_not_validation_errors() {
        let err = parse::<Probe>(b"{\"a\": ").err();
        assert_eq!(
            err.map(|e| e.code()),
            Some(crate::error::ErrorCode::MalformedJson)
        );
    }

    /// What `parse` did before it read the body's members into a list: the whole body
    /// into a `Value`, fields looked up in its `Map`.
    fn parse_through_a_map<T: FromBody>(bytes: &[u8]) -> Result<T::Output, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("body", "a JSON object is required"));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
        let Value::Object(obj) = &value else {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        };
        read::<T>(Object::Map(obj))
    }

    /// A JSON value as text: scalars of every kind, small arrays and objects.
    fn json_text() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|x| format!("{x:?}")),
            Just("1e400".to_owned()),
            "[a-z \\\"]{0,6}".prop_map(|t| format!("\"{t}\"")),
        ];
        scalar.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                members(inner),
            ]
        })
    }

    /// An object's text from members whose keys repeat often (the probe's own fields
    /// among them), so repeated keys are common.
    fn members(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["a", "b", "items", "w", "zzz", "A"]);
        prop::collection::vec((key, value), 0..6).prop_map(|members| {
            let inner: Vec<String> = members
                .into_iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("{{{}}}", inner.join(","))
        })
    }

    /// An error as something comparable: its code, text and field errors.
    type Failure = (crate::error::ErrorCode, String, Vec<FieldError>);

    /// The outcome as something comparable.
    fn outcome(
        result: Result<<Probe as FromBody>::Output, ApiError>,
    ) -> Result<<Probe as FromBody>::Output, Failure> {
        result.map_err(|err| (err.code(), err.to_string(), err.field_errors().to_vec()))
    }

    proptest::proptest! {
        /// Reading the body's members into a list answers every body exactly as reading it
        /// into a `Map` did: the same output, or the same error with the same fields.
        #[test]
        fn members_read_as_a_map_would_be(
            body in prop_oneof![
                4 => members(json_text()),
                1 => json_text(),
                1 => "[ {}\\[\\]\":,a-z0-9]{0,12}",
            ]
        ) {
            proptest::prop_assert_eq!(
                outcome(parse::<Probe>(body.as_bytes())),
                outcome(parse_through_a_map::<Probe>(body.as_bytes())),
                "{}", body
            );
        }
    }

    #[test]
    fn the_whitespace_table_is_what_trim_removes() {
        let listed = |c: char| WHITESPACE.iter().any(|&(a, b)| (a..=b).contains(&c));
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(listed(c), c.is_whitespace(), "{:04X}", u32::from(c));
        }
        assert_eq!(
            verbatim_pattern(),
            "^[^\\u0000-\\u001F\\u007F]*\
             [^\\u0009-\\u000D\\u0020\\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028-\\u2029\\u202F\\u205F\\u3000\\u0000-\\u001F\\u007F]\
             [^\\u0000-\\u001F\\u007F]*$"
        );
        // The class of controls is crm-core's rule, character for character.
        for c in (0..=0x7f_u32).filter_map(char::from_u32) {
            let listed = c <= '\u{1f}' || c == '\u{7f}';
            assert_eq!(listed, crm_core::is_control(c), "{:04X}", u32::from(c));
        }
    }

    #[test]
    fn json_is_accepted_in_utf_8_only() {
        let accepts = <JsonBody<Probe> as OaiPayload>::check_content_type;
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

    #[test]
    fn external_ids_accept_integers_but_no_other_non_strings() {
        assert_eq!(
            external_lead_id(&json!(42)).map(|e| e.as_str().to_owned()),
            Ok("42".to_owned())
        );
        assert_eq!(
            external_lead_id(&json!(" x ")).map(|e| e.as_str().to_owned()),
            Ok(" x ".to_owned())
        );
        for bad in [json!(true), json!(1.5), json!({}), json!([])] {
            assert!(external_lead_id(&bad).is_err(), "{bad}");
        }
    }
}
