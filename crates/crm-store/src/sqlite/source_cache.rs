//! What the SQLite writer keeps of the sources registrations name (see
//! `super::registration`'s module docs for why it always equals the database).
//!
//! One thing it holds ahead of the database: the smooth credits of a group's
//! registrations. A smooth pick moves the credit of every eligible operator of its source,
//! one weight row each; written per registration, those rows cost smooth mode a fifth of
//! its throughput (docs/benchmarks.md). Registrations therefore move the cached credits
//! only, and the writer writes each moved source's credits once ([`SourceCache::flush`]):
//! before the group commits, before any job that is not a registration (it may read or
//! reset those rows), before the cache is emptied while the group's work stands, and after
//! each job when the group runs with a savepoint per job. A rollback drops them with the
//! picks that moved them.

use std::collections::{HashMap, HashSet};

use crm_core::{Candidate, OperatorId, Pace, Prepared, SourceId, SourceRule, StoreError, Strategy};
use rusqlite::{Connection, params_from_iter};

use crate::{conn::sqlite_err, sql};

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
    /// by any other write. The count stops one past [`Prepared::MAX_AHEAD`] (a 201 says "at
    /// least that many" beyond it), so a count of `MAX_AHEAD` or more is only a lower bound:
    /// it is kept while it stays there (without it, every registration into a long queue
    /// counted again) and forgotten when a drain would take it below.
    pub(super) counts: HashMap<SourceId, u64>,
    /// The sources whose cached credits are newer than their rows (see the module docs).
    pub(super) unflushed: HashSet<SourceId>,
}

impl SourceCache {
    /// Forgets everything, unwritten credits included: after a rollback, or once they
    /// are written ([`Self::flush`]).
    pub fn clear(&mut self) {
        self.by_code.clear();
        self.candidates.clear();
        self.rules.clear();
        self.waiting.clear();
        self.counts.clear();
        self.unflushed.clear();
    }

    /// Writes the cached credits of every source whose credits moved since they were last
    /// written, one statement per source (every candidate's credit).
    ///
    /// # Errors
    /// The update failed; the caller rolls back.
    pub fn flush(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let sources: Vec<SourceId> = self.unflushed.iter().copied().collect();
        for source in sources {
            let Some(candidates) = self.candidates.get(&source) else {
                // Nothing removes a source with unwritten credits but `clear`.
                return Err(StoreError::Internal(
                    "smooth credits lost from the cache".into(),
                ));
            };
            let mut params = Vec::with_capacity(2 * candidates.len() + 1);
            for (candidate, _, _, credit) in candidates {
                params.extend([candidate.operator_id.get(), *credit]);
            }
            params.push(source.get());
            conn.prepare_cached(&sql::set_credits(candidates.len()))
                .and_then(|mut statement| statement.execute(params_from_iter(params)))
                .map_err(|err| StoreError::from(sqlite_err(err)))?;
            // Only once written: a failed update leaves them to the next flush (or the
            // rollback).
            self.unflushed.remove(&source);
        }
        Ok(())
    }

    /// Keeps the credits a smooth pick over `source`'s cached candidates left (in their
    /// order), to be written by [`Self::flush`]. False when the source is not cached.
    pub(super) fn moved_credits(&mut self, source: SourceId, after: &[i64]) -> bool {
        let Some(cached) = self.candidates.get_mut(&source) else {
            return false;
        };
        for (entry, after) in cached.iter_mut().zip(after) {
            entry.3 = *after;
        }
        self.unflushed.insert(source);
        true
    }

    /// What a drain learned about the sources' queues, and the places (and paces) it
    /// claimed.
    pub fn drained(&mut self, drained: &crate::drain::Drained) {
        for assigned in &drained.assigned {
            // A smooth source's step moved its credits: read them again. (Its cached
            // credits were written before the drain's job ran.)
            debug_assert!(!self.unflushed.contains(&assigned.source));
            if self
                .rules
                .get(&assigned.source)
                .is_some_and(|rule| rule.strategy == Strategy::SmoothWeighted)
            {
                self.candidates.remove(&assigned.source);
                self.rules.remove(&assigned.source);
            }
            self.claimed(assigned.operator, assigned.pace);
            match self.counts.get_mut(&assigned.source) {
                // Below the bound it may no longer be exact: counted again when needed.
                Some(count) if *count == Prepared::MAX_AHEAD => {
                    self.counts.remove(&assigned.source);
                }
                Some(count) => *count = count.saturating_sub(1),
                None => {}
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
