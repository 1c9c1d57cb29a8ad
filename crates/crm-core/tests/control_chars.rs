//! Control characters in identifiers, names, codes and labels: any text holding one of
//! U+0000..=U+001F or U+007F is rejected, wherever it sits, and text without one is
//! judged by the other rules only. The oracle is written from that rule, not from the code.

use crm_core::{ExternalLeadId, IdempotencyKey, Name, SourceCode, ValueError, reject_controls};
use proptest::prelude::*;

/// The rule as docs/security.md states it.
fn is_forbidden(c: char) -> bool {
    u32::from(c) <= 0x1f || c == '\u{7f}'
}

/// One forbidden character: any C0 control, or DEL.
fn control() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..=0x1f).prop_map(|n| char::from_u32(n).expect("a C0 control")),
        Just('\u{7f}'),
    ]
}

/// Any character but a forbidden one (letters, spaces, C1 controls, emoji, ...).
fn allowed_char() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>(),
        // Neighbours of the forbidden ranges, so the edges are tried often.
        prop::sample::select(vec![
            ' ', '~', '\u{80}', '\u{85}', '\u{9f}', '\u{a0}', '\u{3000}'
        ]),
    ]
    .prop_filter("not a control character", |c| !is_forbidden(*c))
}

/// Text of up to `max` allowed characters.
fn allowed_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(allowed_char(), 0..=max).prop_map(String::from_iter)
}

/// Any text of up to `max` characters, controls included.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![any::<char>(), control()], 0..=max)
        .prop_map(String::from_iter)
}

proptest! {
    #[test]
    fn reject_controls_follows_the_rule(text in any_text(40)) {
        prop_assert_eq!(
            reject_controls(&text).is_err(),
            text.chars().any(is_forbidden),
            "{:?}", text
        );
    }

    /// Nothing is trimmed from an external id, so a control anywhere rejects it; `x` keeps
    /// it from being all whitespace.
    #[test]
    fn external_ids_with_a_control_are_rejected(
        before in any_text(100), c in control(), after in any_text(100)
    ) {
        let raw = format!("x{before}{c}{after}");
        prop_assert_eq!(ExternalLeadId::parse(&raw), Err(ValueError::ControlCharacter));
    }

    #[test]
    fn external_ids_without_one_are_kept_verbatim(
        before in allowed_text(120), after in allowed_text(120)
    ) {
        let raw = format!("{before}x{after}");
        prop_assert_eq!(
            ExternalLeadId::parse(&raw).map(|id| id.as_str().to_owned()),
            Ok(raw)
        );
    }

    /// A control inside a name (so trimming cannot remove it) rejects it.
    #[test]
    fn names_with_a_control_inside_are_rejected(
        before in any_text(100), c in control(), after in any_text(100)
    ) {
        let raw = format!("a{before}{c}{after}z");
        prop_assert_eq!(Name::parse(&raw), Err(ValueError::ControlCharacter));
    }

    #[test]
    fn names_without_one_are_accepted(middle in allowed_text(253)) {
        let raw = format!("a{middle}z");
        prop_assert_eq!(Name::parse(&raw).map(|n| n.as_str().to_owned()), Ok(raw));
    }

    /// Whatever is sent, an accepted name holds no control character: the ones trimming
    /// may drop (tab, line breaks around it) are the only ones that get through.
    #[test]
    fn an_accepted_name_never_holds_a_control(raw in any_text(60)) {
        if let Ok(name) = Name::parse(&raw) {
            prop_assert!(!name.as_str().chars().any(is_forbidden), "{:?}", raw);
        }
    }

    #[test]
    fn codes_and_idempotency_keys_with_a_control_are_rejected(
        before in "[A-Za-z0-9_.-]{0,40}", c in control(), after in "[A-Za-z0-9_.-]{0,40}"
    ) {
        let raw = format!("{before}{c}{after}");
        prop_assert_eq!(SourceCode::parse(&raw), Err(ValueError::ControlCharacter));
        prop_assert_eq!(
            IdempotencyKey::new("who", &raw, "fp"),
            Err(ValueError::ControlCharacter)
        );
        let clean = format!("{before}{after}");
        if !clean.is_empty() {
            prop_assert!(SourceCode::parse(&clean).is_ok());
            prop_assert!(IdempotencyKey::new("who", &clean, "fp").is_ok());
        }
    }
}

#[test]
fn the_edges_of_the_rule() {
    // NUL, tab, newline and DEL inside: rejected.
    for raw in ["a\0b", "a\tb", "a\nb", "a\rb", "a\u{1f}b", "a\u{7f}b"] {
        assert_eq!(
            Name::parse(raw),
            Err(ValueError::ControlCharacter),
            "{raw:?}"
        );
        assert_eq!(
            ExternalLeadId::parse(raw),
            Err(ValueError::ControlCharacter),
            "{raw:?}"
        );
    }
    // Around a name, whitespace controls are trimmed as before; around an external id,
    // nothing is trimmed, so they reject it.
    assert_eq!(
        Name::parse("\tAnn\r\n").map(|n| n.as_str().to_owned()),
        Ok("Ann".to_owned())
    );
    assert_eq!(
        ExternalLeadId::parse("42\n"),
        Err(ValueError::ControlCharacter)
    );
    // A control that is not whitespace is not trimmed.
    assert_eq!(Name::parse("\0Ann"), Err(ValueError::ControlCharacter));
    // All whitespace is still "empty", tabs included.
    assert_eq!(ExternalLeadId::parse(" \t"), Err(ValueError::Empty));
    assert_eq!(Name::parse("\t \n"), Err(ValueError::Empty));
    // Neighbours that are allowed: space, '~', C1 controls, NEL and no-break space.
    for raw in ["a b", "a~b", "a\u{80}b", "a\u{85}b", "a\u{9f}b", "a\u{a0}b"] {
        assert!(Name::parse(raw).is_ok(), "{raw:?}");
        assert!(ExternalLeadId::parse(raw).is_ok(), "{raw:?}");
    }
    assert_eq!(
        ValueError::ControlCharacter.to_string(),
        "must not contain control characters (U+0000 to U+001F, U+007F)"
    );
}
