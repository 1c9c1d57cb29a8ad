//! A dry run of a weight change: the rule applied many times to candidates as they are now,
//! with no store in the loop. Deterministic for a seeded generator.

use rand::Rng;

use crate::{Candidate, OperatorId, pick, smooth::aligned, smooth_pick};

/// How many of `picks` draws each candidate would receive against today's loads and limits
/// (unchanged between draws: this is the share the rule gives now, not a drain), in the
/// candidates' order. Operators at capacity, inactive or rate-limited receive none, as they
/// would.
pub fn predict<R: Rng + ?Sized>(
    candidates: &[Candidate],
    picks: u32,
    rng: &mut R,
) -> Vec<(OperatorId, u64)> {
    predict_by(candidates, picks, |cs| {
        let chosen = pick(cs, rng).chosen?;
        cs.iter().position(|c| c.operator_id == chosen)
    })
}

/// [`predict`] for a smooth source from the credits `credit` (in the candidates' order):
/// exactly what its next `picks` picks would be while nobody's load moves.
#[must_use]
pub fn predict_smooth(
    candidates: &[Candidate],
    credit: &[i64],
    picks: u32,
) -> Vec<(OperatorId, u64)> {
    let mut credit = aligned(candidates.len(), credit);
    predict_by(candidates, picks, |cs| smooth_pick(cs, &mut credit))
}

fn predict_by(
    candidates: &[Candidate],
    picks: u32,
    mut next: impl FnMut(&[Candidate]) -> Option<usize>,
) -> Vec<(OperatorId, u64)> {
    let mut counts: Vec<(OperatorId, u64)> =
        candidates.iter().map(|c| (c.operator_id, 0)).collect();
    for _ in 0..picks {
        let Some(chosen) = next(candidates) else {
            break;
        };
        counts[chosen].1 += 1;
    }
    counts
}

/// What a drain would do now with `waiting` contacts of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPreview {
    /// How many each candidate would take, in the candidates' order.
    pub taken: Vec<(OperatorId, u64)>,
    /// How many would still wait.
    pub still_waiting: u64,
}

/// The drain of `waiting` contacts over `candidates`: one draw per contact, oldest first,
/// each raising the chosen operator's load, until nobody is eligible or nothing waits, as
/// the store's drain does. A paced operator is taken as it is judged now (its bucket is not
/// run down by the preview).
pub fn preview_drain<R: Rng + ?Sized>(
    candidates: &[Candidate],
    waiting: u64,
    rng: &mut R,
) -> DrainPreview {
    preview_drain_by(candidates, waiting, |cs| {
        let chosen = pick(cs, rng).chosen?;
        cs.iter().position(|c| c.operator_id == chosen)
    })
}

/// [`preview_drain`] for a smooth source from the credits `credit` (in the candidates'
/// order).
#[must_use]
pub fn preview_drain_smooth(
    candidates: &[Candidate],
    credit: &[i64],
    waiting: u64,
) -> DrainPreview {
    let mut credit = aligned(candidates.len(), credit);
    preview_drain_by(candidates, waiting, |cs| smooth_pick(cs, &mut credit))
}

fn preview_drain_by(
    candidates: &[Candidate],
    waiting: u64,
    mut next: impl FnMut(&[Candidate]) -> Option<usize>,
) -> DrainPreview {
    let mut now: Vec<Candidate> = candidates.to_vec();
    let mut taken: Vec<(OperatorId, u64)> = candidates.iter().map(|c| (c.operator_id, 0)).collect();
    let mut left = waiting;
    while left > 0 {
        let Some(chosen) = next(&now) else {
            break;
        };
        now[chosen].open_contacts += 1;
        taken[chosen].1 += 1;
        left -= 1;
    }
    DrainPreview {
        taken,
        still_waiting: left,
    }
}
