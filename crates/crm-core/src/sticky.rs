//! The sticky owner (the Strategies issue's `sticky_owner`): a returning lead goes back to
//! the operator of its latest contact, only when that operator could take it now. The
//! choice never bends a rule for stickiness: an owner who is switched off, full, paced out
//! or without a weight for the source is passed over, and the source's own strategy
//! decides, with the reason kept for the decision record.

use crate::{Candidate, Exclusion, OperatorId, exclusion};

/// Why a lead's owner was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSkipped {
    /// It has no weight for the contact's source (now).
    NoWeight,
    /// The rule excludes it now, for this reason.
    Excluded(Exclusion),
}

/// What stickiness made of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// The lead has no earlier contact with an operator: the strategy decides.
    NoOwner,
    /// The owner takes it: the candidate at this index.
    Owner(usize),
    /// The owner cannot take it now: the strategy decides, and the record says why.
    Fallback {
        /// The lead's owner.
        owner: OperatorId,
        /// Why it was passed over.
        skipped: OwnerSkipped,
    },
}

/// Whether `owner` (the operator of the lead's latest contact, if any) takes the contact,
/// among `candidates` (the source's operators with their loads now).
#[must_use]
pub fn sticky_owner(candidates: &[Candidate], owner: Option<OperatorId>) -> Sticky {
    let Some(owner) = owner else {
        return Sticky::NoOwner;
    };
    let Some(i) = candidates.iter().position(|c| c.operator_id == owner) else {
        return Sticky::Fallback {
            owner,
            skipped: OwnerSkipped::NoWeight,
        };
    };
    match exclusion(&candidates[i]) {
        None => Sticky::Owner(i),
        Some(reason) => Sticky::Fallback {
            owner,
            skipped: OwnerSkipped::Excluded(reason),
        },
    }
}
