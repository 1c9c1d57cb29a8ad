//! Validated value types: each is built by a fallible constructor, so an invalid value
//! cannot exist past the boundary that parsed it.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// Why a value was rejected. Messages are lower-case and name the limit that was broken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// The value is empty (or only whitespace where whitespace is trimmed).
    #[error("must not be empty")]
    Empty,
    /// The value is longer than allowed.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The maximum length in characters.
        max: usize,
    },
    /// A source code contains a character outside `[A-Za-z0-9_.-]`.
    #[error("may contain only letters, digits, '_', '.' and '-'")]
    InvalidCharacter,
    /// Text contains a control character (see [`is_control`]).
    #[error("must not contain control characters (U+0000 to U+001F, U+007F)")]
    ControlCharacter,
    /// A number is outside its allowed range.
    #[error("must be between {min} and {max}")]
    OutOfRange {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A payload is larger than allowed once serialised.
    #[error("must be at most {max} bytes once serialised")]
    TooLarge {
        /// The maximum size in bytes.
        max: usize,
    },
    /// A name that is none of those allowed.
    #[error("must be one of: {expected}")]
    NotOneOf {
        /// The allowed names, comma-separated.
        expected: &'static str,
    },
    /// A webhook URL the service will not call.
    #[error("{0}")]
    Url(#[from] crate::UrlRefused),
}

/// Whether `c` is a control character that no identifier, name, code or label may
/// contain: the C0 controls U+0000..=U+001F (tab and line breaks included) and DEL U+007F.
///
/// They are invisible or move the cursor when shown, a tab or newline inside a one-line
/// name or identifier is a mistake or a trick, and PostgreSQL cannot store U+0000 in a
/// text column at all. Names are trimmed first, so a tab or newline around one is still
/// accepted (and dropped). C1 controls (U+0080..=U+009F) are not included: PostgreSQL
/// stores them, and they are rare enough that rejecting them would be a guess.
#[must_use]
pub const fn is_control(c: char) -> bool {
    c.is_ascii_control()
}

/// Rejects text with a control character (see [`is_control`]); the one rule every
/// identifier, name, code and label here goes through.
///
/// # Errors
/// [`ValueError::ControlCharacter`] when `s` contains one.
pub fn reject_controls(s: &str) -> Result<(), ValueError> {
    // Every control character is ASCII, so a byte scan finds them in UTF-8 text (a byte
    // of a multi-byte character is 0x80 or above, which `is_control` never accepts).
    if s.bytes().any(|b| is_control(char::from(b))) {
        Err(ValueError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// A display name of an operator or a source: trimmed, 1..=255 characters, no control
/// characters once trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Longest accepted name, in characters.
    pub const MAX_CHARS: usize = 255;

    /// Trims `raw` and checks what is left.
    ///
    /// # Errors
    /// [`ValueError::Empty`] when nothing but whitespace is left, [`ValueError::TooLong`]
    /// beyond [`Name::MAX_CHARS`] characters, [`ValueError::ControlCharacter`] when a
    /// control character is left inside.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        check_text(trimmed, Self::MAX_CHARS)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A source's unique code: 1..=100 characters of `[A-Za-z0-9_.-]`, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SourceCode(String);

impl SourceCode {
    /// Longest accepted code, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Checks `raw` as it is (codes are not trimmed: a space is an invalid character).
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`], [`ValueError::ControlCharacter`]
    /// or [`ValueError::InvalidCharacter`].
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        check_text(raw, Self::MAX_CHARS)?;
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(ValueError::InvalidCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The external identifier of a lead, kept exactly as sent: it is someone else's
/// identifier. 1..=255 characters, not all whitespace, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ExternalLeadId(String);

impl ExternalLeadId {
    /// Longest accepted identifier, in characters.
    pub const MAX_CHARS: usize = 255;

    /// Checks `raw` without changing it.
    ///
    /// # Errors
    /// [`ValueError::Empty`] when empty or only whitespace, [`ValueError::TooLong`] beyond
    /// [`ExternalLeadId::MAX_CHARS`] characters, [`ValueError::ControlCharacter`] when it
    /// contains one (a tab or newline too: nothing is trimmed here).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.trim().is_empty() {
            return Err(ValueError::Empty);
        }
        check_text(raw, Self::MAX_CHARS)?;
        Ok(Self(raw.to_owned()))
    }

    /// The identifier as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many open contacts an operator may hold at once: 0..=1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MaxActiveContacts(i64);

impl MaxActiveContacts {
    /// Largest accepted limit.
    pub const MAX: i64 = 1_000_000;
    /// The default limit of a new operator, as in the original service.
    pub const DEFAULT: Self = Self(10);

    /// Checks the range.
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] outside 0..=1,000,000.
    pub fn new(value: i64) -> Result<Self, ValueError> {
        in_range(value, 0, Self::MAX).map(Self)
    }

    /// The limit as a number.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// An operator's weight for a source: 1..=1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Weight(i64);

impl Weight {
    /// Largest accepted weight.
    pub const MAX: i64 = 1_000_000;

    /// Checks the range.
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] outside 1..=1,000,000.
    pub fn new(value: i64) -> Result<Self, ValueError> {
        in_range(value, 1, Self::MAX).map(Self)
    }

    /// The weight as a number.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A contact's payload: any JSON value, kept as compact JSON text of at most 64 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(String);

impl Payload {
    /// Largest accepted payload, in bytes of compact JSON.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Serialises `value` compactly and checks its size.
    ///
    /// # Errors
    /// [`ValueError::TooLarge`] beyond [`Payload::MAX_BYTES`].
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ValueError> {
        let json = value.to_string();
        if json.len() > Self::MAX_BYTES {
            return Err(ValueError::TooLarge {
                max: Self::MAX_BYTES,
            });
        }
        Ok(Self(json))
    }

    /// The JSON `null` payload of a contact registered without one.
    #[must_use]
    pub fn null() -> Self {
        Self("null".to_owned())
    }

    /// Wraps JSON text read back from storage, which was validated when it was written.
    #[must_use]
    pub fn from_stored(json: String) -> Self {
        Self(json)
    }

    /// The compact JSON text.
    #[must_use]
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The payload parsed back into a JSON value.
    ///
    /// # Errors
    /// Only if stored text was not JSON, which [`Payload::from_value`] rules out.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// A client's `Idempotency-Key` for one registration, scoped to the credential that sent
/// it, with a fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    credential: String,
    key: String,
    fingerprint: String,
}

impl IdempotencyKey {
    /// Longest accepted key, in characters.
    pub const MAX_CHARS: usize = 255;
    /// How long a key is remembered.
    pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

    /// Checks `key` (1..=255 visible ASCII characters). `credential` names who sent it
    /// and `fingerprint` identifies the request body; both are opaque here.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`], [`ValueError::ControlCharacter`]
    /// or [`ValueError::InvalidCharacter`].
    pub fn new(credential: &str, key: &str, fingerprint: &str) -> Result<Self, ValueError> {
        check_text(key, Self::MAX_CHARS)?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValueError::InvalidCharacter);
        }
        Ok(Self {
            credential: credential.to_owned(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
        })
    }

    /// Who sent it.
    #[must_use]
    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// The key itself.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request it came with.
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SourceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The checks every identifier, name, code and label shares: not empty, at most `max`
/// characters, no control characters.
fn check_text(s: &str, max: usize) -> Result<(), ValueError> {
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    if s.chars().count() > max {
        return Err(ValueError::TooLong { max });
    }
    reject_controls(s)
}

fn in_range(value: i64, min: i64, max: i64) -> Result<i64, ValueError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ValueError::OutOfRange { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Ann ").map(|n| n.0), Ok("Ann".to_owned()));
        assert_eq!(Name::parse("   "), Err(ValueError::Empty));
        assert!(Name::parse(&"я".repeat(255)).is_ok());
        assert_eq!(
            Name::parse(&"я".repeat(256)),
            Err(ValueError::TooLong { max: 255 })
        );
    }

    #[test]
    fn source_codes_allow_a_small_alphabet() {
        assert!(SourceCode::parse("tg_bot-1.v2").is_ok());
        assert_eq!(
            SourceCode::parse("tg bot"),
            Err(ValueError::InvalidCharacter)
        );
        assert_eq!(SourceCode::parse("бот"), Err(ValueError::InvalidCharacter));
        assert_eq!(SourceCode::parse(""), Err(ValueError::Empty));
        assert_eq!(
            SourceCode::parse(&"a".repeat(101)),
            Err(ValueError::TooLong { max: 100 })
        );
    }

    #[test]
    fn external_ids_are_kept_verbatim() {
        assert_eq!(
            ExternalLeadId::parse(" 42 ").map(|e| e.0),
            Ok(" 42 ".to_owned())
        );
        assert_eq!(ExternalLeadId::parse(" \t"), Err(ValueError::Empty));
        assert_eq!(ExternalLeadId::parse(""), Err(ValueError::Empty));
    }

    #[test]
    fn numbers_have_ranges() {
        assert!(MaxActiveContacts::new(0).is_ok());
        assert!(MaxActiveContacts::new(1_000_001).is_err());
        assert!(MaxActiveContacts::new(-1).is_err());
        assert!(Weight::new(0).is_err());
        assert!(Weight::new(1).is_ok());
        assert!(Weight::new(1_000_000).is_ok());
        assert!(Weight::new(1_000_001).is_err());
    }

    #[test]
    fn payload_is_compact_and_bounded() {
        let value = serde_json::json!({"b": 1, "a": [1, 2]});
        assert_eq!(
            Payload::from_value(&value).map(|p| p.0),
            Ok(r#"{"b":1,"a":[1,2]}"#.to_owned())
        );
        let big = serde_json::Value::String("x".repeat(Payload::MAX_BYTES));
        assert_eq!(
            Payload::from_value(&big),
            Err(ValueError::TooLarge {
                max: Payload::MAX_BYTES
            })
        );
    }
}
