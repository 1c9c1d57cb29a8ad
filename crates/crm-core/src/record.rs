//! A decision's record as stored: the compact form every registration and drain writes,
//! and the reading of it (and of the older form) back into a [`Decision`].
//!
//! Every registration stores one record, so its size is a cost of the hot path: on the
//! SQLite default benchmark the record's bytes (the history row, its WAL frames, their
//! checkpoint) were about a twentieth of the server's time per registration at the keyed
//! form's ~470 bytes for ten candidates (docs/benchmarks.md, "2026-12-06 evening"). The
//! stored form (version 3) therefore writes each candidate as an array, `[id, w, load,
//! max]` with the exclusion as a fifth element when there is one, and leaves out `total`,
//! which the candidates give; about half the bytes. The keyed form (version 2, the
//! `Serialize` of [`Decision`]) is what the API shows, and records stored in it before are
//! read as well.

use serde::{Deserialize, Serialize, Serializer, ser::SerializeTuple};

use crate::{
    Candidate, Credit, Decision, Exclusion, OperatorId, OwnerSkipped, StickyNote, Strategy,
    Verdict, distribution::verdict_weights,
};

impl Decision {
    /// The version of the stored record [`Decision::record`] writes.
    pub const STORED_VERSION: u32 = 3;

    /// The stored record: compact JSON, version [`Decision::STORED_VERSION`] (see the
    /// module docs). [`Decision::from_record`] reads it back.
    #[must_use]
    pub fn record(&self) -> String {
        let (sticky, sticky_fallback) = match self.sticky {
            None => (None, None),
            Some(StickyNote::Owner(owner)) => (
                Some(Owner {
                    owner,
                    skipped: None,
                }),
                None,
            ),
            Some(StickyNote::Fallback { owner, skipped }) => (
                None,
                Some(Owner {
                    owner,
                    skipped: Some(skipped.as_str()),
                }),
            ),
        };
        let stored = Stored {
            v: Self::STORED_VERSION,
            c: Compact(&self.candidates),
            draw: self.draw,
            chosen: self.chosen,
            ahead: self.ahead,
            strategy: self.strategy,
            credit: self.credit.as_ref().map(|c| c.before.as_slice()),
            credit_after: self.credit.as_ref().map(|c| c.after.as_slice()),
            sticky,
            sticky_fallback,
        };
        serde_json::to_string(&stored).expect("a record of integers and names serialises")
    }

    /// Reads back a stored record: the compact form [`Decision::record`] writes (version
    /// 3) or the keyed form stored before it (version 2); `None` for anything else. The
    /// activity of a candidate is not in the record apart from its exclusion, so it is
    /// `false` exactly for the inactive ones (and `rate_limited` true exactly for the
    /// rate-limited ones).
    #[must_use]
    pub fn from_record(json: &str) -> Option<Self> {
        let read: Read = serde_json::from_str(json).ok()?;
        let candidates = match (read.v, read.c, read.candidates) {
            (3, Some(compact), None) => compact
                .into_iter()
                .map(|StoredCompact(id, w, load, max, out)| verdict(id, w, load, max, out))
                .collect::<Option<Vec<_>>>()?,
            (2, None, Some(keyed)) => keyed
                .into_iter()
                .map(|c| verdict(c.id, c.w, c.load, c.max, c.out))
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        let total_weight = verdict_weights(&candidates).map(|(_, w)| w).sum();
        let strategy = match read.strategy.as_deref() {
            None => Strategy::WeightedRandom,
            Some(name) => name.parse().ok()?,
        };
        let credit = match (read.credit, read.credit_after) {
            (Some(before), Some(after)) => Some(Credit { before, after }),
            (None, None) => None,
            _ => return None,
        };
        let sticky = match (read.sticky, read.sticky_fallback) {
            (Some(hit), None) => Some(StickyNote::Owner(OperatorId(hit.owner))),
            (None, Some(fallback)) => {
                let skipped = match fallback.skipped.as_deref()? {
                    name if name == OwnerSkipped::NoWeight.as_str() => OwnerSkipped::NoWeight,
                    reason => OwnerSkipped::Excluded(exclusion(reason)?),
                };
                Some(StickyNote::Fallback {
                    owner: OperatorId(fallback.owner),
                    skipped,
                })
            }
            (None, None) => None,
            (Some(_), Some(_)) => return None,
        };
        Some(Self {
            candidates,
            total_weight,
            draw: read.draw,
            chosen: read.chosen.map(OperatorId),
            ahead: read.ahead,
            strategy,
            credit,
            sticky,
        })
    }
}

/// The record as [`Decision::record`] writes it, borrowing from the decision.
#[derive(Serialize)]
struct Stored<'a> {
    v: u32,
    c: Compact<'a>,
    draw: Option<u64>,
    chosen: Option<OperatorId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ahead: Option<u64>,
    #[serde(skip_serializing_if = "is_weighted_random")]
    strategy: Strategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    credit: Option<&'a [i64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credit_after: Option<&'a [i64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sticky: Option<Owner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sticky_fallback: Option<Owner>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_weighted_random(strategy: &Strategy) -> bool {
    *strategy == Strategy::WeightedRandom
}

#[derive(Serialize)]
struct Owner {
    owner: OperatorId,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

/// The verdicts as arrays: `[id, w, load, max]`, and the exclusion fifth when there is one.
struct Compact<'a>(&'a [Verdict]);

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(CompactVerdict))
    }
}

struct CompactVerdict<'a>(&'a Verdict);

impl Serialize for CompactVerdict<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = &self.0.candidate;
        let mut t = serializer.serialize_tuple(4 + usize::from(self.0.excluded.is_some()))?;
        t.serialize_element(&c.operator_id)?;
        t.serialize_element(&c.weight)?;
        t.serialize_element(&c.open_contacts)?;
        t.serialize_element(&c.max_active_contacts)?;
        if let Some(excluded) = &self.0.excluded {
            t.serialize_element(excluded)?;
        }
        t.end()
    }
}

/// A stored record of either version, as read.
#[derive(Deserialize)]
struct Read {
    v: u32,
    /// Version 3's verdicts.
    c: Option<Vec<StoredCompact>>,
    /// Version 2's verdicts.
    candidates: Option<Vec<StoredKeyed>>,
    draw: Option<u64>,
    chosen: Option<i64>,
    ahead: Option<u64>,
    strategy: Option<String>,
    credit: Option<Vec<i64>>,
    credit_after: Option<Vec<i64>>,
    sticky: Option<StoredOwner>,
    sticky_fallback: Option<StoredOwner>,
}

#[derive(Deserialize)]
struct StoredCompact(i64, i64, i64, i64, #[serde(default)] Option<String>);

#[derive(Deserialize)]
struct StoredKeyed {
    id: i64,
    w: i64,
    load: i64,
    max: i64,
    out: Option<String>,
}

#[derive(Deserialize)]
struct StoredOwner {
    owner: i64,
    skipped: Option<String>,
}

fn exclusion(name: &str) -> Option<Exclusion> {
    Exclusion::ALL.into_iter().find(|e| e.as_str() == name)
}

fn verdict(id: i64, w: i64, load: i64, max: i64, out: Option<String>) -> Option<Verdict> {
    let excluded = match out.as_deref() {
        None => None,
        Some(out) => Some(exclusion(out)?),
    };
    Some(Verdict {
        candidate: Candidate {
            operator_id: OperatorId(id),
            weight: w,
            is_active: excluded != Some(Exclusion::Inactive),
            open_contacts: load,
            max_active_contacts: max,
            rate_limited: excluded == Some(Exclusion::RateLimited),
        },
        excluded,
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use crate::{Candidate, Decision, OperatorId, choose};

    fn candidate(id: i64, weight: i64, load: i64, max: i64) -> Candidate {
        Candidate {
            operator_id: OperatorId(id),
            weight,
            is_active: true,
            open_contacts: load,
            max_active_contacts: max,
            rate_limited: false,
        }
    }

    #[test]
    fn a_record_is_stored_compact_and_shown_keyed() {
        let decision = choose(
            &[candidate(3, 5, 2, 2), candidate(4, 1, 0, 10)],
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        let stored = decision.record();
        assert_eq!(
            stored,
            r#"{"v":3,"c":[[3,5,2,2,"at_capacity"],[4,1,0,10]],"draw":0,"chosen":4}"#
        );
        let read = Decision::from_record(&stored).expect("reads back");
        assert_eq!(read, decision);
        assert_eq!(
            serde_json::to_string(&read).ok().as_deref(),
            Some(
                r#"{"v":2,"candidates":[{"id":3,"w":5,"load":2,"max":2,"out":"at_capacity"},{"id":4,"w":1,"load":0,"max":10}],"total":1,"draw":0,"chosen":4}"#
            )
        );
    }

    #[test]
    fn records_of_other_shapes_are_not_read() {
        for json in [
            r#"{"v":3,"candidates":[{"id":3,"w":5,"load":2,"max":2}],"draw":0,"chosen":3}"#,
            r#"{"v":2,"c":[[3,5,2,2]],"draw":0,"chosen":3}"#,
            r#"{"v":3,"c":[[3,5,2]],"draw":0,"chosen":3}"#,
            r#"{"v":3,"c":[[3,5,2,2,"tired"]],"draw":0,"chosen":3}"#,
            r#"{"v":1,"candidates":[],"draw":null,"chosen":null}"#,
            r#"{"v":3,"c":[],"draw":null,"chosen":null,"credit":[]}"#,
        ] {
            assert_eq!(Decision::from_record(json), None, "{json}");
        }
    }
}
