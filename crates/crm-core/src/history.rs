//! A contact's decision history: each time it was registered, queued, drained, assigned by
//! hand or unassigned, with the rule's record for automatic assignments, so "why this
//! operator?" has an answer for every assignment, and a stored draw can be replayed.

use std::{fmt::Write as _, str::FromStr};

use chrono::{DateTime, Utc};

use crate::{
    Decision, Exclusion, OperatorId, StickyNote,
    distribution::{holder, verdict_weights},
    smooth::smooth_verdicts,
};

/// How a contact came to its state at one point of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionPath {
    /// Registered and assigned by the rule.
    Registered,
    /// Registered and stored waiting: nobody eligible, or contacts of its source waited.
    Queued,
    /// Assigned by the rule while it waited (a drain).
    Drained,
    /// Assigned by a person.
    Manual,
    /// Taken from its operator and put back in the queue.
    Unassigned,
}

impl DecisionPath {
    /// Every path, in the order of this type.
    pub const ALL: [Self; 5] = [
        Self::Registered,
        Self::Queued,
        Self::Drained,
        Self::Manual,
        Self::Unassigned,
    ];

    /// Its name in storage and answers.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Queued => "queued",
            Self::Drained => "drained",
            Self::Manual => "manual",
            Self::Unassigned => "unassigned",
        }
    }

    /// The path of a registration's decision, by the operator it chose: assigned, or
    /// stored waiting (`None`).
    #[must_use]
    pub const fn of_registration(chosen: Option<OperatorId>) -> Self {
        match chosen {
            Some(_) => Self::Registered,
            None => Self::Queued,
        }
    }
}

impl FromStr for DecisionPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|path| path.as_str() == s)
            .ok_or_else(|| format!("unknown decision path {s:?}"))
    }
}

/// One entry of a contact's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionEntry {
    /// Its place in the contact's history, from 1.
    pub seq: i64,
    /// What happened.
    pub path: DecisionPath,
    /// When.
    pub at: DateTime<Utc>,
    /// The operator the contact went to (`None` when it waits afterwards).
    pub operator_id: Option<OperatorId>,
    /// The rule's record ([`Decision::record`]) for automatic paths; `None` for a person's.
    pub record: Option<String>,
}

impl DecisionEntry {
    /// One line for a person: "2 of 5 eligible: 2 at_capacity, 1 inactive; drew 17 of 40 →
    /// operator 4".
    #[must_use]
    pub fn summary(&self) -> String {
        let operator = |id: Option<OperatorId>| {
            id.map_or_else(|| "nobody".to_owned(), |id| format!("operator {id}"))
        };
        match self.path {
            DecisionPath::Manual => format!("assigned by hand → {}", operator(self.operator_id)),
            DecisionPath::Unassigned => {
                format!(
                    "taken from {}, back in the queue",
                    operator(self.operator_id)
                )
            }
            _ => match self.record.as_deref().and_then(Decision::from_record) {
                Some(decision) => decision.summary(self.path),
                None => format!("{} → {}", self.path.as_str(), operator(self.operator_id)),
            },
        }
    }
}

impl Decision {
    /// The operator the record's rule gives, worked out again from the record alone: for
    /// a draw, the operator the draw falls on with the eligible candidates' weights laid end
    /// to end in the record's order; for a smooth pick, the smooth rule run from the
    /// recorded credits (`None` unless it also arrives at the recorded credits after); for
    /// a sticky hit, the owner if the record shows it eligible. For a record of an
    /// automatic choice this is the operator it chose; `None` when nobody was chosen.
    #[must_use]
    pub fn replay(&self) -> Option<OperatorId> {
        if let Some(StickyNote::Owner(owner)) = self.sticky {
            let eligible = self
                .candidates
                .iter()
                .any(|v| v.candidate.operator_id == owner && v.excluded.is_none());
            return eligible.then_some(owner);
        }
        if let Some(credit) = &self.credit {
            if credit.before.len() != self.candidates.len() {
                return None;
            }
            let mut after = credit.before.clone();
            let i = smooth_verdicts(&self.candidates, &mut after)?;
            return (after == credit.after).then(|| self.candidates[i].candidate.operator_id);
        }
        holder(verdict_weights(&self.candidates), self.draw?)
    }

    /// The one-line explanation of [`DecisionEntry::summary`] for an automatic `path`.
    #[must_use]
    pub fn summary(&self, path: DecisionPath) -> String {
        let eligible = self
            .candidates
            .iter()
            .filter(|v| v.excluded.is_none())
            .count();
        let mut line = format!("{eligible} of {} eligible", self.candidates.len());
        let mut first = true;
        for reason in [
            Exclusion::AtCapacity,
            Exclusion::Inactive,
            Exclusion::RateLimited,
            Exclusion::ZeroWeight,
            Exclusion::UnassignedFrom,
        ] {
            let n = self
                .candidates
                .iter()
                .filter(|v| v.excluded == Some(reason))
                .count();
            if n > 0 {
                let _ = write!(
                    line,
                    "{}{n} {}",
                    if first { ": " } else { ", " },
                    reason.as_str()
                );
                first = false;
            }
        }
        if let Some(StickyNote::Fallback { owner, skipped }) = self.sticky {
            let _ = write!(line, "; owner {owner} passed over ({})", skipped.as_str());
        }
        match (self.draw, self.chosen) {
            (None, Some(chosen)) if matches!(self.sticky, Some(StickyNote::Owner(_))) => {
                let _ = write!(line, "; back to its owner → operator {chosen}");
            }
            (None, Some(chosen)) if self.credit.is_some() => {
                let _ = write!(line, "; smooth pick → operator {chosen}");
            }
            (Some(draw), Some(chosen)) => {
                // Counted from 1 for people: the record's draw is a point in 0..total.
                let _ = write!(
                    line,
                    "; drew {} of {} → operator {chosen}",
                    draw + 1,
                    self.total_weight
                );
            }
            _ if path == DecisionPath::Queued && eligible > 0 => match self.ahead {
                Some(ahead) => {
                    let _ = write!(
                        line,
                        "; queued behind {ahead} older contact{} of its source",
                        if ahead == 1 { "" } else { "s" }
                    );
                }
                None => line.push_str("; queued behind older contacts of its source"),
            },
            _ => {
                line.push_str("; nobody to take it, waits");
                if let Some(ahead) = self.ahead.filter(|&ahead| ahead > 0) {
                    let _ = write!(line, " behind {ahead}");
                }
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Candidate, queued};

    fn free(id: i64) -> Candidate {
        Candidate {
            operator_id: OperatorId(id),
            weight: 1,
            is_active: true,
            open_contacts: 0,
            max_active_contacts: 5,
            rate_limited: false,
        }
    }

    #[test]
    fn a_queued_registration_says_how_many_were_ahead() {
        let mut decision = queued(&[free(1), free(2)]);
        decision.ahead = Some(1);
        let entry = |decision: &Decision| DecisionEntry {
            seq: 1,
            path: DecisionPath::Queued,
            at: DateTime::UNIX_EPOCH,
            operator_id: None,
            record: Some(decision.record()),
        };
        assert_eq!(
            entry(&decision).summary(),
            "2 of 2 eligible; queued behind 1 older contact of its source"
        );
        decision.ahead = Some(7);
        assert_eq!(
            entry(&decision).summary(),
            "2 of 2 eligible; queued behind 7 older contacts of its source"
        );
        let read = Decision::from_record(&decision.record()).expect("a record");
        assert_eq!(read.ahead, Some(7));
        // Records written before `ahead` existed read back without it.
        let old = r#"{"v":2,"candidates":[],"total":0,"draw":null,"chosen":null}"#;
        assert_eq!(Decision::from_record(old).map(|d| d.ahead), Some(None));
    }

    #[test]
    fn a_draw_is_told_counting_from_one() {
        let mut heavy = free(2);
        heavy.weight = 3;
        // Operator 1 holds the draw's point 0, operator 2 the points 1 to 3.
        let mut decision = queued(&[free(1), heavy]);
        decision.total_weight = 4;
        let told = |draw: u64| {
            let mut decision = decision.clone();
            decision.draw = Some(draw);
            decision.chosen = decision.replay();
            decision.summary(DecisionPath::Registered)
        };
        assert_eq!(told(0), "2 of 2 eligible; drew 1 of 4 → operator 1");
        assert_eq!(told(1), "2 of 2 eligible; drew 2 of 4 → operator 2");
        assert_eq!(told(3), "2 of 2 eligible; drew 4 of 4 → operator 2");
    }
}
