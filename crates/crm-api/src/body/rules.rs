//! What the OpenAPI document says of each body field ([`Rule`]s): whether it is
//! required, its limits and its default, all taken from crm-core's constants, the same
//! ones the conversions check against.

use std::{fmt::Write as _, marker::PhantomData};

use crm_core::{
    AssignmentsPerMinute, KeyScope, MaxActiveContacts, Name, SimulationRequest, SourceCode,
    Strategy, Weight,
};
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::Type,
};

/// What the document says of a field: whether it is required, and its schema.
pub(crate) trait Rule: Send + Sync {
    /// Whether the document lists it as required (the conversion decides what a missing
    /// field means).
    const REQUIRED: bool = true;

    /// The field's schema; `T`'s own by default.
    fn schema<T: Type>() -> MetaSchemaRef {
        T::schema_ref()
    }
}

/// The schema of the field's type, as it is.
pub(crate) struct Plain;

impl Rule for Plain {}

/// A field that may be left out, with `R`'s schema.
pub(crate) struct Optional<R = Plain>(PhantomData<R>);

impl<R: Rule> Rule for Optional<R> {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        R::schema::<T>()
    }
}

fn inline(schema: MetaSchema) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(schema))
}

/// A display name (or a key's label): 1..=[`Name::MAX_CHARS`] characters once trimmed.
pub(crate) struct NameRule;

impl Rule for NameRule {
    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            pattern: Some(trimmed_pattern(Name::MAX_CHARS)),
            ..MetaSchema::new("string")
        })
    }
}

/// A source code: 1..=[`SourceCode::MAX_CHARS`] of `[A-Za-z0-9_.-]`.
pub(crate) struct CodeRule;

impl Rule for CodeRule {
    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            pattern: Some(format!("^[A-Za-z0-9_.-]{{1,{}}}$", SourceCode::MAX_CHARS)),
            ..MetaSchema::new("string")
        })
    }
}

/// An integer from `min` to `max`.
fn integer(min: i64, max: i64) -> MetaSchema {
    MetaSchema {
        minimum: Some(min as f64),
        maximum: Some(max as f64),
        ..MetaSchema::new_with_format("integer", "int64")
    }
}

/// A weight: 1..=[`Weight::MAX`].
pub(crate) struct WeightRule;

impl Rule for WeightRule {
    fn schema<T: Type>() -> MetaSchemaRef {
        inline(integer(1, Weight::MAX))
    }
}

/// An operator's limit: 0..=[`MaxActiveContacts::MAX`], and, when `DEFAULT`, that
/// [`MaxActiveContacts::DEFAULT`] is what a missing one means.
pub(crate) struct LimitRule<const DEFAULT: bool = false>;

impl<const DEFAULT: bool> Rule for LimitRule<DEFAULT> {
    const REQUIRED: bool = !DEFAULT;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            default: DEFAULT.then(|| MaxActiveContacts::DEFAULT.get().into()),
            ..integer(0, MaxActiveContacts::MAX)
        })
    }
}

/// An operator's pace: 1..=[`AssignmentsPerMinute::MAX`] automatic assignments per minute,
/// or `null` for none; may be left out (none on create, unchanged on update).
pub(crate) struct PaceRule;

impl Rule for PaceRule {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            nullable: true,
            ..integer(1, i64::from(AssignmentsPerMinute::MAX))
        })
    }
}

/// A dry run's number of draws: 1..=[`SimulationRequest::MAX_PICKS`], and
/// [`SimulationRequest::DEFAULT_PICKS`] when left out.
pub(crate) struct PicksRule;

impl Rule for PicksRule {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            default: Some(SimulationRequest::DEFAULT_PICKS.into()),
            ..integer(1, i64::from(SimulationRequest::MAX_PICKS))
        })
    }
}

/// A dry run's seed: 0..=[`SimulationRequest::MAX_SEED`]; a fresh one when left out.
pub(crate) struct SeedRule;

impl Rule for SeedRule {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(integer(0, SimulationRequest::MAX_SEED as i64))
    }
}

/// A key's scope: one of [`KeyScope`]'s names (today `viewer`).
pub(crate) struct ScopeRule;

impl Rule for ScopeRule {
    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            enum_items: vec![KeyScope::Viewer.as_str().into()],
            ..MetaSchema::new("string")
        })
    }
}

/// A source's strategy: one of [`Strategy`]'s names.
pub(crate) struct StrategyRule;

impl Rule for StrategyRule {
    fn schema<T: Type>() -> MetaSchemaRef {
        inline(strategy_schema())
    }
}

/// [`StrategyRule`], `weighted_random` when left out.
pub(crate) struct DefaultStrategy;

impl Rule for DefaultStrategy {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            default: Some(Strategy::default().as_str().into()),
            ..strategy_schema()
        })
    }
}

fn strategy_schema() -> MetaSchema {
    MetaSchema {
        enum_items: Strategy::ALL.iter().map(|s| s.as_str().into()).collect(),
        ..MetaSchema::new("string")
    }
}

/// A boolean that is `false` when left out.
pub(crate) struct DefaultFalse;

impl Rule for DefaultFalse {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            default: Some(false.into()),
            ..MetaSchema::new("boolean")
        })
    }
}

/// A boolean that is `true` when left out.
pub(crate) struct DefaultTrue;

impl Rule for DefaultTrue {
    const REQUIRED: bool = false;

    fn schema<T: Type>() -> MetaSchemaRef {
        inline(MetaSchema {
            default: Some(true.into()),
            ..MetaSchema::new("boolean")
        })
    }
}

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

#[cfg(test)]
mod tests {
    use poem_openapi::types::Type;
    use serde_json::json;

    use super::*;
    use crate::body::Field;

    #[test]
    fn the_schema_takes_its_limits_from_the_core() {
        let MetaSchemaRef::Inline(schema) = <Field<i64, WeightRule>>::schema_ref() else {
            panic!("inline");
        };
        assert_eq!(schema.maximum, Some(Weight::MAX as f64));
        let MetaSchemaRef::Inline(schema) = <Field<i64, LimitRule<true>>>::schema_ref() else {
            panic!("inline");
        };
        assert_eq!(
            schema.default,
            Some(json!(MaxActiveContacts::DEFAULT.get()))
        );
        const { assert!(!<Field<i64, LimitRule<true>>>::IS_REQUIRED) };
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
}
