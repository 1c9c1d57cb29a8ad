//! The id in a path (`/api/operators/{id}`): an optional `-` and ASCII digits, in the
//! `i64` range, and nothing else.
//!
//! poem-openapi's `Path<i64>` parses with `str::parse`, which also takes `+1`: `+1` is not
//! how an id is written, so it would name entity 1 by a second spelling. Ids that fit but
//! do not exist (`0`, `-1`) stay a 404, as they were.

use std::borrow::Cow;

use poem_openapi::{
    registry::MetaSchemaRef,
    types::{ParseError, ParseFromParameter, ParseResult, Type},
};

/// An id read from the path. Described in the OpenAPI document exactly as an `i64`
/// (`integer`, format `int64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathId(i64);

impl PathId {
    /// The id as a number.
    pub(crate) const fn get(self) -> i64 {
        self.0
    }
}

impl Type for PathId {
    const IS_REQUIRED: bool = true;
    type RawValueType = i64;
    type RawElementValueType = i64;

    fn name() -> Cow<'static, str> {
        i64::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        i64::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&i64> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a i64> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for PathId {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        parse(value)
            .map(Self)
            .ok_or_else(|| ParseError::custom("not an integer in the i64 range"))
    }
}

/// `text` as an id: `-?[0-9]+` in the `i64` range.
fn parse(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_digits_with_an_optional_minus() {
        for (text, id) in [
            ("1", Some(1)),
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("007", Some(7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.0", None),
            ("1e3", None),
            ("0x10", None),
            ("-", None),
            ("--1", None),
            ("-+1", None),
            ("", None),
            ("١", None),
        ] {
            assert_eq!(parse(text), id, "{text:?}");
        }
    }

    proptest! {
        /// Every `i64` as Rust writes it is read back; any text is accepted exactly when
        /// it is `-?[0-9]+` and `i64` takes it.
        #[test]
        fn accepts_exactly_the_plain_spelling(n in any::<i64>(), text in "[-+ 0-9.]{0,22}") {
            prop_assert_eq!(parse(&n.to_string()), Some(n));
            let chars: Vec<char> = text.chars().collect();
            let plain = chars.iter().any(char::is_ascii_digit)
                && chars
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || (i == 0 && *c == '-'));
            let expected = if plain { text.parse::<i64>().ok() } else { None };
            prop_assert_eq!(parse(&text), expected, "{:?}", text);
        }
    }
}
