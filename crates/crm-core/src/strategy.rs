//! A source's strategy (the Strategies issue): how it chooses among its eligible operators,
//! and whether a returning lead keeps its operator. [`decide`] is the one place the three
//! rules meet: the sticky owner first when the source keeps owners, then the weighted draw
//! ([`crate::choose`]) or the smooth pick ([`crate::smooth_pick`]).

use std::{fmt, str::FromStr};

use rand::Rng;
use serde::Serialize;

use crate::{
    Candidate, Decision, Exclusion, OperatorId, OwnerSkipped, Sticky, choose_avoiding,
    distribution::unchosen,
    smooth::{aligned, smooth_verdicts},
    sticky_owner,
};

/// How a source chooses among its eligible operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A draw with probability weight / sum (what the original did).
    #[default]
    WeightedRandom,
    /// Deterministic: the operator furthest behind its share, by Tijdeman's rule
    /// ([`crate::smooth_pick`]), from credits stored on the weight rows.
    SmoothWeighted,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Self; 2] = [Self::WeightedRandom, Self::SmoothWeighted];

    /// Its name in the API, the database and decision records.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WeightedRandom => "weighted_random",
            Self::SmoothWeighted => "smooth_weighted",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = crate::ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or(crate::ValueError::NotOneOf {
                expected: "weighted_random, smooth_weighted",
            })
    }
}

/// A source's rule: its strategy, and whether a returning lead goes back to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceRule {
    /// How it chooses among the eligible.
    pub strategy: Strategy,
    /// A returning lead goes to the operator of its latest contact from this source, when
    /// that operator is eligible.
    pub sticky_owner: bool,
}

/// The smooth state around one pick: every candidate's credit before and after it, in the
/// candidates' order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// Before the pick (what the weight rows held).
    pub before: Vec<i64>,
    /// After it (what the weight rows hold now).
    pub after: Vec<i64>,
}

/// What stickiness made of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyNote {
    /// The lead's owner took it.
    Owner(OperatorId),
    /// The owner was passed over, and why; the strategy decided.
    Fallback {
        /// The lead's owner.
        owner: OperatorId,
        /// Why it was passed over.
        skipped: OwnerSkipped,
    },
}

impl OwnerSkipped {
    /// Its name in decision records.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoWeight => "no_weight",
            Self::Excluded(reason) => reason.as_str(),
        }
    }
}

/// What a source's state gives a decision beyond the candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceState<'a> {
    /// The source's rule.
    pub rule: SourceRule,
    /// The operator of the lead's latest contact from the source, if it had one (read
    /// only for a sticky source).
    pub owner: Option<OperatorId>,
    /// The candidates' smooth credits in their order (read only for a smooth source;
    /// missing ones count as 0, a reset state).
    pub credit: &'a [i64],
}

/// Decides who takes a contact among `candidates` under the source's rule: the owner when
/// the source keeps owners and the owner is eligible (and not `avoid`), otherwise the
/// strategy, recording the owner that was passed over and why. `avoid` is passed over as
/// [`Exclusion::UnassignedFrom`], as in [`choose_avoiding`].
///
/// A weighted-random source without stickiness decides exactly as [`choose_avoiding`],
/// drawing the same number from `rng`; a smooth pick and a sticky hit draw nothing.
pub fn decide<R: Rng + ?Sized>(
    candidates: &[Candidate],
    state: &SourceState<'_>,
    avoid: Option<OperatorId>,
    rng: &mut R,
) -> Decision {
    let rule = state.rule;
    let sticky = if rule.sticky_owner {
        match sticky_owner(candidates, state.owner) {
            Sticky::NoOwner => None,
            Sticky::Owner(i) if avoid == Some(candidates[i].operator_id) => {
                Some(StickyNote::Fallback {
                    owner: candidates[i].operator_id,
                    skipped: OwnerSkipped::Excluded(Exclusion::UnassignedFrom),
                })
            }
            Sticky::Owner(i) => Some(StickyNote::Owner(candidates[i].operator_id)),
            Sticky::Fallback { owner, skipped } => Some(StickyNote::Fallback { owner, skipped }),
        }
    } else {
        None
    };
    let mut decision = match (sticky, rule.strategy) {
        (Some(StickyNote::Owner(owner)), _) => {
            let mut decision = unchosen(candidates, avoid);
            decision.chosen = Some(owner);
            decision
        }
        (_, Strategy::WeightedRandom) => choose_avoiding(candidates, avoid, rng),
        (_, Strategy::SmoothWeighted) => {
            let mut decision = unchosen(candidates, avoid);
            let before = aligned(candidates.len(), state.credit);
            let mut after = before.clone();
            if let Some(i) = smooth_verdicts(&decision.candidates, &mut after) {
                decision.chosen = Some(candidates[i].operator_id);
                decision.credit = Some(Credit { before, after });
            }
            decision
        }
    };
    decision.strategy = rule.strategy;
    decision.sticky = sticky;
    decision
}
