//! What the SQLite writer keeps of the sources registrations name (see
//! `super::registration`'s module docs for why it always equals the database).

use std::collections::HashMap;

use crm_core::{Candidate, OperatorId, Pace, SourceId, SourceRule, Strategy};

/// A source's candidate as cached: its operator's name and pace, and its smooth credit for
/// the source, beside it. The candidate's `rate_limited` is judged afresh by each
/// registration, at its own time.
pub(super) type Cached = (Candidate, String, Option<Pace>, i64);

/// What the writer knows of the sources registrations named (see the module docs).
#[derive(Default)]
pub struct SourceCache {
    pub(super) by_code: HashMap<String, SourceId>,
    /// The candidates of each source seen, by operator id, with the operators' names and
    /// paces.
    pub(super) candidates: HashMap<SourceId, Vec<Cached>>,
    /// The rule of each source whose candidates are cached.
    pub(super) rules: HashMap<SourceId, SourceRule>,
    /// Whether each source has contacts waiting, as far as it is known.
    pub(super) waiting: HashMap<SourceId, bool>,
    /// How many, where known: counted when a registration is first stored waiting behind
    /// others, then raised by each one stored after it and lowered by each drained; forgotten
    /// by any other write.
    pub(super) counts: HashMap<SourceId, u64>,
}

impl SourceCache {
    /// Forgets everything; called before any other write and after any failure.
    pub fn clear(&mut self) {
        self.by_code.clear();
        self.candidates.clear();
        self.rules.clear();
        self.waiting.clear();
        self.counts.clear();
    }

    /// What a drain learned about the sources' queues, and the places (and paces) it
    /// claimed.
    pub fn drained(&mut self, drained: &crate::drain::Drained) {
        for assigned in &drained.assigned {
            // A smooth source's step moved its credits: read them again.
            if self
                .rules
                .get(&assigned.source)
                .is_some_and(|rule| rule.strategy == Strategy::SmoothWeighted)
            {
                self.candidates.remove(&assigned.source);
                self.rules.remove(&assigned.source);
            }
            self.claimed(assigned.operator, assigned.pace);
            if let Some(count) = self.counts.get_mut(&assigned.source) {
                *count = count.saturating_sub(1);
            }
        }
        for &(source, waiting) in &drained.waiting {
            self.waiting.insert(source, waiting);
            if !waiting {
                self.counts.insert(source, 0);
            }
        }
    }

    /// Counts a claimed contact on `operator` in every source it is a candidate of, with
    /// its bucket after the claim when it is paced.
    pub(super) fn claimed(&mut self, operator: OperatorId, pace: Option<Pace>) {
        self.adjust(operator, 1);
        if pace.is_some() {
            self.each(operator, |(_, _, cached, _)| *cached = pace);
        }
    }

    /// Runs `change` on `operator`'s entry in every source it is a candidate of.
    fn each(&mut self, operator: OperatorId, mut change: impl FnMut(&mut Cached)) {
        for candidates in self.candidates.values_mut() {
            for cached in candidates.iter_mut() {
                if cached.0.operator_id == operator {
                    change(cached);
                }
            }
        }
    }

    /// Uncounts a closed contact of `operator` in every source it is a candidate of
    /// (the close lowered its stored counter by one in the same unit of work).
    pub fn released(&mut self, operator: OperatorId) {
        self.adjust(operator, -1);
    }

    fn adjust(&mut self, operator: OperatorId, by: i64) {
        self.each(operator, |(candidate, _, _, _)| {
            candidate.open_contacts = (candidate.open_contacts + by).max(0);
        });
    }
}
