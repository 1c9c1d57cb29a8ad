//! The distribution rule: who gets a new contact. Pure: the randomness is injected.

use rand::{Rng, RngExt};
use serde::Serialize;

use crate::{Credit, OperatorId, StickyNote, Strategy, Weight};

/// An operator that has a weight for the contact's source, with its current load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The operator.
    pub operator_id: OperatorId,
    /// Its weight for the source (stored weights are 1..=1,000,000; the rule still guards
    /// against non-positive ones and caps larger ones at [`Weight::MAX`]).
    pub weight: i64,
    /// Whether it takes contacts.
    pub is_active: bool,
    /// Its open contacts.
    pub open_contacts: i64,
    /// Its limit.
    pub max_active_contacts: i64,
    /// Its pace ([`crate::Pace`]) admits no automatic assignment now.
    pub rate_limited: bool,
}

/// Why a candidate could not receive the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// The operator is switched off.
    Inactive,
    /// Its open contacts have reached its limit.
    AtCapacity,
    /// It reached its `max_assignments_per_minute` ([`crate::Pace`]): its bucket refills
    /// at [`crate::next_eligible`].
    RateLimited,
    /// Its weight is zero or negative, so it can never be drawn.
    ZeroWeight,
    /// The contact was just taken from it by hand (`POST /api/contacts/{id}/unassign`): the
    /// drain that follows passes it over for that contact ([`choose_avoiding`]).
    UnassignedFrom,
}

impl Exclusion {
    /// Every reason, in the order they are checked.
    pub const ALL: [Self; 5] = [
        Self::Inactive,
        Self::AtCapacity,
        Self::RateLimited,
        Self::ZeroWeight,
        Self::UnassignedFrom,
    ];

    /// Its name in records and answers (as serialised).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::AtCapacity => "at_capacity",
            Self::RateLimited => "rate_limited",
            Self::ZeroWeight => "zero_weight",
            Self::UnassignedFrom => "unassigned_from",
        }
    }
}

/// What the rule made of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The candidate as it was seen.
    pub candidate: Candidate,
    /// `None` when eligible, otherwise why not.
    pub excluded: Option<Exclusion>,
}

/// The outcome of one application of the rule, with enough detail to explain it.
///
/// Serialised as the compact decision record stored with every contact (version 2):
///
/// ```json
/// {"v":2,"candidates":[{"id":3,"w":5,"load":2,"max":2,"out":"at_capacity"},
///  {"id":4,"w":1,"load":0,"max":10}],"total":1,"draw":0,"chosen":4}
/// ```
///
/// Per candidate: operator `id`, weight `w`, open contacts `load`, limit `max`, and `out`
/// with the reason only when it was excluded (`inactive`, `at_capacity`, `rate_limited`,
/// `zero_weight`, `unassigned_from`; checked in that order, so any other verdict implies the operator was active). Then the
/// eligible weights' `total`, the `draw` in `0..total` and the `chosen` operator (both
/// `null` when nobody was eligible, or when the contact queued behind others of its source
/// while someone was: see [`queued`]), and for a registration stored waiting, `ahead`: how
/// many contacts of its source waited ahead of it. Short keys: the record is written with every
/// contact, and at ten candidates it is a third of the verbose form's size, which is what
/// a registration writes to disk (docs/benchmarks.md). Records without `v` are version 1:
/// the same facts under the field names of [`Candidate`], `excluded`, `total_weight`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Every candidate in the order given, with its verdict.
    pub candidates: Vec<Verdict>,
    /// The sum of the eligible candidates' weights.
    pub total_weight: u64,
    /// The uniform draw in `0..total_weight`; `None` when nothing was eligible or the
    /// contact queued behind others ([`queued`]).
    pub draw: Option<u64>,
    /// The chosen operator: by the draw, by the smooth rule (no draw, `credit` set) or as
    /// the lead's owner (no draw, `sticky` names it); `None` when nobody was eligible or the
    /// contact queued behind others.
    pub chosen: Option<OperatorId>,
    /// For a registration stored waiting: how many contacts of its source were waiting
    /// ahead of it (recorded as `"ahead"`, only then).
    pub ahead: Option<u64>,
    /// The source's strategy (recorded as `"strategy"` unless it is the default,
    /// `weighted_random`, so a record without it is a weighted draw's).
    pub strategy: Strategy,
    /// For a smooth pick: every candidate's credit before and after it (recorded as
    /// `"credit"` and `"credit_after"`, in the candidates' order).
    pub credit: Option<Credit>,
    /// What the sticky owner made of it (recorded as `"sticky": {"owner": …}` when the
    /// owner took it, `"sticky_fallback": {"owner": …, "skipped": …}` when it was passed
    /// over).
    pub sticky: Option<StickyNote>,
}

impl Decision {
    /// The version of the keyed form, the `Serialize` below: what the API shows of a
    /// record, and what records were stored as before the compact form
    /// ([`Decision::record`]).
    pub const KEYED_VERSION: u32 = 2;
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = &self.candidate;
        let fields = if self.excluded.is_some() { 5 } else { 4 };
        let mut s = serializer.serialize_struct("Verdict", fields)?;
        s.serialize_field("id", &c.operator_id)?;
        s.serialize_field("w", &c.weight)?;
        s.serialize_field("load", &c.open_contacts)?;
        s.serialize_field("max", &c.max_active_contacts)?;
        if let Some(excluded) = &self.excluded {
            s.serialize_field("out", excluded)?;
        }
        s.end()
    }
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let fields = 5
            + usize::from(self.ahead.is_some())
            + usize::from(self.strategy != Strategy::WeightedRandom)
            + 2 * usize::from(self.credit.is_some())
            + usize::from(self.sticky.is_some());
        let mut s = serializer.serialize_struct("Decision", fields)?;
        s.serialize_field("v", &Self::KEYED_VERSION)?;
        s.serialize_field("candidates", &self.candidates)?;
        s.serialize_field("total", &self.total_weight)?;
        s.serialize_field("draw", &self.draw)?;
        s.serialize_field("chosen", &self.chosen)?;
        if let Some(ahead) = &self.ahead {
            s.serialize_field("ahead", ahead)?;
        }
        if self.strategy != Strategy::WeightedRandom {
            s.serialize_field("strategy", &self.strategy)?;
        }
        if let Some(credit) = &self.credit {
            s.serialize_field("credit", &credit.before)?;
            s.serialize_field("credit_after", &credit.after)?;
        }
        match self.sticky {
            None => {}
            Some(StickyNote::Owner(owner)) => {
                s.serialize_field("sticky", &serde_json::json!({ "owner": owner }))?;
            }
            Some(StickyNote::Fallback { owner, skipped }) => s.serialize_field(
                "sticky_fallback",
                &serde_json::json!({ "owner": owner, "skipped": skipped.as_str() }),
            )?,
        }
        s.end()
    }
}

/// Classifies one candidate: the first reason that applies, in the order inactive,
/// at capacity, rate limited, zero weight.
#[must_use]
#[inline]
pub fn exclusion(candidate: &Candidate) -> Option<Exclusion> {
    if !candidate.is_active {
        Some(Exclusion::Inactive)
    } else if candidate.open_contacts >= candidate.max_active_contacts {
        Some(Exclusion::AtCapacity)
    } else if candidate.rate_limited {
        Some(Exclusion::RateLimited)
    } else if candidate.weight <= 0 {
        Some(Exclusion::ZeroWeight)
    } else {
        None
    }
}

/// Who gets the contact and how it was drawn, without the per-candidate verdicts: what
/// [`pick`] returns, and the last three fields of a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The sum of the eligible candidates' weights.
    pub total_weight: u64,
    /// The uniform draw in `0..total_weight`; `None` when nothing was eligible.
    pub draw: Option<u64>,
    /// The chosen operator; `None` exactly when no candidate was eligible.
    pub chosen: Option<OperatorId>,
}

/// Applies the rule without recording it: drops inactive, full, rate-limited and weightless
/// candidates, then draws one of the rest with probability `weight / sum of remaining
/// weights`. It allocates nothing, so it suits callers that draw many times and keep only
/// the outcome (a dry run of a weight change, a simulation); [`choose`] is the same draw
/// with the verdicts a stored decision needs.
///
/// Exactly one number is drawn from `rng` when some candidate is eligible, none otherwise,
/// so a seeded generator gives a reproducible sequence of picks, the same as [`choose`]'s.
pub fn pick<R: Rng + ?Sized>(candidates: &[Candidate], rng: &mut R) -> Pick {
    draw(
        candidates
            .iter()
            .map(|candidate| (candidate.operator_id, eligible_weight(candidate))),
        rng,
    )
}

/// Applies the rule and records it: every candidate's verdict, which is what the decision
/// stored with a contact explains, and the same draw as [`pick`] (from the same `rng`, the
/// same number and operator).
pub fn choose<R: Rng + ?Sized>(candidates: &[Candidate], rng: &mut R) -> Decision {
    choose_avoiding(candidates, None, rng)
}

/// [`choose`], with `avoid` (when given) excluded as [`Exclusion::UnassignedFrom`] if no
/// other reason applies to it: the contact was just taken from that operator by hand. With
/// `avoid` `None`, or naming nobody among `candidates`, it is [`choose`] exactly.
pub fn choose_avoiding<R: Rng + ?Sized>(
    candidates: &[Candidate],
    avoid: Option<OperatorId>,
    rng: &mut R,
) -> Decision {
    let mut decision = unchosen(candidates, avoid);
    // The verdicts already say who is eligible.
    let pick = draw(verdict_weights(&decision.candidates), rng);
    decision.draw = pick.draw;
    decision.chosen = pick.chosen;
    decision
}

/// Every candidate's verdict, with `avoid` (when given) excluded as
/// [`Exclusion::UnassignedFrom`] if no other reason applies to it, and the eligible weights'
/// sum; nobody chosen yet. What every decision starts from.
pub(crate) fn unchosen(candidates: &[Candidate], avoid: Option<OperatorId>) -> Decision {
    let verdicts: Vec<Verdict> = candidates
        .iter()
        .map(|candidate| Verdict {
            candidate: *candidate,
            excluded: exclusion(candidate).or_else(|| {
                (avoid == Some(candidate.operator_id)).then_some(Exclusion::UnassignedFrom)
            }),
        })
        .collect();
    Decision {
        total_weight: verdict_weights(&verdicts).map(|(_, w)| w).sum(),
        candidates: verdicts,
        ..Decision::default()
    }
}

/// `(operator, weight in the pick)` of each verdict, as the rule lays them out: 0 for an
/// excluded candidate, its weight capped at [`Weight::MAX`] otherwise.
pub(crate) fn verdict_weights(
    verdicts: &[Verdict],
) -> impl Iterator<Item = (OperatorId, u64)> + Clone {
    verdicts.iter().map(|v| {
        let weight = match v.excluded {
            None => capped(v.candidate.weight),
            Some(_) => 0,
        };
        (v.candidate.operator_id, weight)
    })
}

/// The decision of a contact queued behind others of its source: every candidate's verdict
/// as [`choose`] would give it, but no draw and nobody chosen, whoever was eligible (the
/// oldest waiting contact is served first, by a drain). Draws nothing from any generator.
#[must_use]
pub fn queued(candidates: &[Candidate]) -> Decision {
    unchosen(candidates, None)
}

/// The draw over `(operator, weight in the draw)` pairs in input order, each pass over
/// `weights` a fresh clone of the iterator: the eligible weights laid end to end, one
/// uniform number in `0..total`, and the operator whose slice holds it. An excluded
/// candidate's weight is 0, so its slice is empty and never holds the draw.
fn draw<R, I>(weights: I, rng: &mut R) -> Pick
where
    R: Rng + ?Sized,
    I: Iterator<Item = (OperatorId, u64)> + Clone,
{
    let total_weight: u64 = weights.clone().map(|(_, weight)| weight).sum();
    if total_weight == 0 {
        return Pick {
            total_weight,
            draw: None,
            chosen: None,
        };
    }
    let draw = rng.random_range(0..total_weight);
    Pick {
        total_weight,
        draw: Some(draw),
        chosen: holder(weights, draw),
    }
}

/// The operator whose slice holds `draw` when `weights` are laid end to end in order.
pub(crate) fn holder(
    weights: impl Iterator<Item = (OperatorId, u64)>,
    draw: u64,
) -> Option<OperatorId> {
    let mut remaining = draw;
    for (operator_id, weight) in weights {
        if remaining < weight {
            return Some(operator_id);
        }
        remaining -= weight;
    }
    None
}

/// A candidate's weight in the draw: zero when it is excluded, otherwise its weight capped
/// at [`Weight::MAX`], so that no sum of them can overflow (stored weights never exceed it;
/// hand-built candidates might).
#[inline]
fn eligible_weight(candidate: &Candidate) -> u64 {
    // `exclusion(candidate).is_none()` without its branches: a weight at or below zero
    // clamps to an empty slice, which is what excluding it means to the draw. The
    // property tests hold the two to each other.
    let has_room = candidate.is_active
        & (candidate.open_contacts < candidate.max_active_contacts)
        & !candidate.rate_limited;
    if has_room {
        capped(candidate.weight)
    } else {
        0
    }
}

/// A weight's size in the draw: nothing at or below zero, at most [`Weight::MAX`].
#[inline]
pub(crate) fn capped(weight: i64) -> u64 {
    weight.clamp(0, Weight::MAX).unsigned_abs()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_decision_serialises_as_the_compact_record() {
        let full = Candidate {
            operator_id: OperatorId(3),
            weight: 5,
            is_active: true,
            open_contacts: 2,
            max_active_contacts: 2,
            rate_limited: false,
        };
        let free = Candidate {
            operator_id: OperatorId(4),
            weight: 1,
            is_active: true,
            open_contacts: 0,
            max_active_contacts: 10,
            rate_limited: false,
        };
        let decision = choose(
            &[full, free],
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(
            serde_json::to_string(&decision).ok().as_deref(),
            Some(
                r#"{"v":2,"candidates":[{"id":3,"w":5,"load":2,"max":2,"out":"at_capacity"},{"id":4,"w":1,"load":0,"max":10}],"total":1,"draw":0,"chosen":4}"#
            )
        );
        let nobody = choose(&[full], &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert_eq!(
            serde_json::to_string(&nobody).ok().as_deref(),
            Some(
                r#"{"v":2,"candidates":[{"id":3,"w":5,"load":2,"max":2,"out":"at_capacity"}],"total":0,"draw":null,"chosen":null}"#
            )
        );
    }
}
