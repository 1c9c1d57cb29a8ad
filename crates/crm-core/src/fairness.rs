//! Is the split fair? Realised against expected shares over a window of decisions: what
//! each operator received, beside what chance alone would have given it, knowing who was
//! actually available at each draw.
//!
//! For each weighted draw, an operator that was eligible had probability
//! `pᵢ = wᵢ / Σ(eligible weights)` of being chosen. Summed over the window, `Σ pᵢ` is its
//! expected count and `Σ pᵢ(1 − pᵢ)` the variance of its count (the draws are independent),
//! so `z = (assigned − expected) / sqrt(variance)` says how unusual the realised count is:
//! |z| > 3 happens by chance about 3 times in 1,000. Decisions without a draw (a contact
//! queued with nobody eligible, or behind others) count only in the exclusion shares;
//! choices that are not draws (a sticky owner's, a smooth pick) are plain counts beside
//! them.

use std::collections::BTreeMap;

use crate::{Decision, Exclusion, OperatorId, OwnerSkipped, StickyNote, distribution::capped};

/// |z| above which an operator's count is flagged.
pub const FLAG_Z: f64 = 3.0;

/// One operator's realised and expected share of a source's weighted draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// The operator.
    pub operator_id: OperatorId,
    /// Its weight for the source now.
    pub weight: i64,
    /// Its weight over the sum of the source's weights now.
    pub configured_share: f64,
    /// Σ pᵢ over the window's draws: what chance alone would have given it.
    pub expected: f64,
    /// How many of the window's draws chose it.
    pub assigned: u64,
    /// `(assigned − expected) / sqrt(Σ pᵢ(1 − pᵢ))`; `None` when that variance is 0 (it was
    /// never eligible, or always the only one).
    pub z: Option<f64>,
    /// `|z| > FLAG_Z`.
    pub flag: bool,
    /// How many contacts of the window were assigned to it by hand (not draws).
    pub manual: u64,
    /// How many went to it as the lead's owner (a sticky source; not draws).
    pub sticky: u64,
    /// How many went to it by the smooth rule (a smooth source; not draws, and never
    /// flagged for not being random).
    pub smooth: u64,
    /// How many of its returning leads went to someone else because it could not take
    /// them (it was their owner, and was passed over).
    pub sticky_missed: u64,
    /// How many of the window's decisions excluded it as at capacity, inactive and
    /// rate-limited.
    pub at_capacity: u64,
    /// See `at_capacity`.
    pub inactive: u64,
    /// See `at_capacity`.
    pub rate_limited: u64,
}

/// The window's figures for a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Decisions read (with or without a draw).
    pub decisions: u64,
    /// Of those, weighted draws.
    pub draws: u64,
    /// One per operator with a weight now, by operator id.
    pub shares: Vec<Share>,
}

#[derive(Default)]
struct Tally {
    expected: f64,
    variance: f64,
    assigned: u64,
    manual: u64,
    sticky: u64,
    smooth: u64,
    sticky_missed: u64,
    at_capacity: u64,
    inactive: u64,
    rate_limited: u64,
}

/// The figures of [`Distribution`], gathered one decision at a time, so a window of a
/// million decisions is folded as it is read and never held whole.
pub struct Fairness {
    weights: Vec<(OperatorId, i64)>,
    tallies: BTreeMap<OperatorId, Tally>,
    decisions: u64,
    draws: u64,
}

impl Fairness {
    /// Figures for the operators of `weights` (the source's weights now). Operators in the
    /// decisions that have no weight now are left out of the answer, not out of the draws.
    #[must_use]
    pub fn new(weights: &[(OperatorId, i64)]) -> Self {
        Self {
            weights: weights.to_vec(),
            tallies: weights
                .iter()
                .map(|(id, _)| (*id, Tally::default()))
                .collect(),
            decisions: 0,
            draws: 0,
        }
    }

    /// Counts one automatic decision (registered, queued or drained).
    pub fn decision(&mut self, decision: &Decision) {
        self.decisions += 1;
        for verdict in &decision.candidates {
            let Some(tally) = self.tallies.get_mut(&verdict.candidate.operator_id) else {
                continue;
            };
            match verdict.excluded {
                Some(Exclusion::AtCapacity) => tally.at_capacity += 1,
                Some(Exclusion::Inactive) => tally.inactive += 1,
                Some(Exclusion::RateLimited) => tally.rate_limited += 1,
                _ => {}
            }
        }
        // Not when a person had just taken the contact from its owner: passing it over
        // then is the person's choice, not a miss.
        if let Some(StickyNote::Fallback { owner, skipped }) = decision.sticky
            && skipped != OwnerSkipped::Excluded(Exclusion::UnassignedFrom)
            && let Some(tally) = self.tallies.get_mut(&owner)
        {
            tally.sticky_missed += 1;
        }
        let chosen = match (decision.draw, decision.chosen) {
            (Some(_), Some(chosen)) => chosen,
            (None, Some(chosen)) => {
                if let Some(tally) = self.tallies.get_mut(&chosen) {
                    match decision.sticky {
                        Some(StickyNote::Owner(_)) => tally.sticky += 1,
                        _ if decision.credit.is_some() => tally.smooth += 1,
                        _ => {}
                    }
                }
                return;
            }
            _ => return,
        };
        if decision.total_weight == 0 {
            return;
        }
        self.draws += 1;
        let total = decision.total_weight as f64;
        for verdict in decision.candidates.iter().filter(|v| v.excluded.is_none()) {
            let Some(tally) = self.tallies.get_mut(&verdict.candidate.operator_id) else {
                continue;
            };
            let p = capped(verdict.candidate.weight) as f64 / total;
            tally.expected += p;
            tally.variance += p * (1.0 - p);
        }
        if let Some(tally) = self.tallies.get_mut(&chosen) {
            tally.assigned += 1;
        }
    }

    /// Counts one assignment by hand: beside the draws, never in them.
    pub fn manual(&mut self, operator: OperatorId) {
        if let Some(tally) = self.tallies.get_mut(&operator) {
            tally.manual += 1;
        }
    }

    /// The figures, one share per operator of the weights, by operator id.
    #[must_use]
    pub fn finish(mut self) -> Distribution {
        let sum: u64 = self.weights.iter().map(|(_, w)| capped(*w)).sum();
        let mut shares: Vec<Share> = self
            .weights
            .iter()
            .map(|&(operator_id, weight)| {
                let tally = self.tallies.remove(&operator_id).unwrap_or_default();
                let z = (tally.variance > 0.0)
                    .then(|| (tally.assigned as f64 - tally.expected) / tally.variance.sqrt());
                Share {
                    operator_id,
                    weight,
                    configured_share: if sum == 0 {
                        0.0
                    } else {
                        capped(weight) as f64 / sum as f64
                    },
                    expected: tally.expected,
                    assigned: tally.assigned,
                    flag: z.is_some_and(|z| z.abs() > FLAG_Z),
                    z,
                    manual: tally.manual,
                    sticky: tally.sticky,
                    smooth: tally.smooth,
                    sticky_missed: tally.sticky_missed,
                    at_capacity: tally.at_capacity,
                    inactive: tally.inactive,
                    rate_limited: tally.rate_limited,
                }
            })
            .collect();
        shares.sort_by_key(|share| share.operator_id);
        Distribution {
            decisions: self.decisions,
            draws: self.draws,
            shares,
        }
    }
}

/// Realised against expected over `decisions` (automatic decisions of one source in a
/// window), for the operators of `weights` (the source's weights now): [`Fairness`] over
/// all of them at once.
pub fn distribution<'d>(
    weights: &[(OperatorId, i64)],
    decisions: impl IntoIterator<Item = &'d Decision>,
) -> Distribution {
    let mut fairness = Fairness::new(weights);
    for decision in decisions {
        fairness.decision(decision);
    }
    fairness.finish()
}
