//! Smooth weighted choice (the Strategies issue's `smooth_weighted`): deterministic given
//! the state, and after every prefix of picks from a reset state, with everyone eligible,
//! each operator's count is within one pick of its ideal share `t · wᵢ / W`.
//!
//! The state is one integer per operator, its *credit*, as in nginx's smooth weighted round
//! robin: before each pick every eligible operator gains its weight, and the chosen one
//! gives back the eligible weights' sum `W`; an ineligible operator is skipped and gains
//! nothing. Divided by `W`, the credit is the operator's lag behind its ideal count.
//!
//! nginx then takes the largest credit, which lets a lag reach more than one pick (weights
//! 51, 91, 3, 12, 91: 1.02 picks; over random weight sets up to about 1.33). Here the choice
//! is Tijdeman's ("The chairman assignment problem", 1980): with `n` eligible operators and
//! `σ = 1 / (2n − 2)`, among those whose lag is at least `σ`, take the earliest deadline,
//! the one whose lag would reach `1 − σ` first (smallest `(1 − σ − lag) / pᵢ`), ties to the
//! first in order. Tijdeman proves that some operator always qualifies and that every lag
//! stays within `1 − σ` of zero, so every count is within one pick of its ideal.
//! `tests/smooth.rs` checks both over random weight sets, and nginx's rule against the
//! example above.
//!
//! When operators drop out and come back, the bound is about the picks made while the
//! same set was eligible; a weights change resets the credits (the Strategies issue).

use crate::{
    Candidate, Verdict,
    distribution::{capped, verdict_weights},
    exclusion,
};

/// Picks an operator among `candidates` by the smooth rule, updating `credit` (one per
/// candidate, in the same order; all 0 after a reset). Returns the chosen candidate's
/// index, or `None` when nobody is eligible (then nothing changes).
///
/// # Panics
/// When `credit` and `candidates` differ in length.
pub fn smooth_pick(candidates: &[Candidate], credit: &mut [i64]) -> Option<usize> {
    assert_eq!(candidates.len(), credit.len(), "one credit per candidate");
    let weights: Vec<Option<u64>> = candidates
        .iter()
        .map(|c| exclusion(c).is_none().then(|| capped(c.weight)))
        .collect();
    smooth_among(&weights, credit)
}

/// [`smooth_pick`] over the rule's verdicts (an excluded candidate is ineligible).
pub(crate) fn smooth_verdicts(verdicts: &[Verdict], credit: &mut [i64]) -> Option<usize> {
    let weights: Vec<Option<u64>> = verdict_weights(verdicts)
        .map(|(_, w)| (w > 0).then_some(w))
        .collect();
    smooth_among(&weights, credit)
}

/// One credit per candidate of `n` from the stored `credit` (missing ones are 0, a reset
/// state).
pub(crate) fn aligned(n: usize, credit: &[i64]) -> Vec<i64> {
    (0..n)
        .map(|i| credit.get(i).copied().unwrap_or(0))
        .collect()
}

/// [`smooth_pick`] over each candidate's weight in the pick, `None` for an ineligible one.
pub(crate) fn smooth_among(weights: &[Option<u64>], credit: &mut [i64]) -> Option<usize> {
    let eligible: Vec<(usize, i128)> = weights
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.map(|w| (i, i128::from(w))))
        .collect();
    let total: i128 = eligible.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    for &(i, w) in &eligible {
        credit[i] = credit[i].saturating_add(i64::try_from(w).unwrap_or(i64::MAX));
    }
    let n = i128::try_from(eligible.len()).unwrap_or(i128::MAX);
    let chosen = if n == 1 {
        eligible[0].0
    } else {
        // In units of 1 / (W · (2n − 2)): lag ≥ σ ⇔ credit · (2n − 2) ≥ W, and the time
        // left before the lag reaches 1 − σ is (W · (2n − 3) − credit · (2n − 2)) / wᵢ.
        let scale = 2 * n - 2;
        let slack = |i: usize| total * (2 * n - 3) - i128::from(credit[i]) * scale;
        let qualified = eligible
            .iter()
            .filter(|&&(i, _)| i128::from(credit[i]) * scale >= total);
        let earliest = qualified
            .min_by(|&&(a, wa), &&(b, wb)| (slack(a) * wb).cmp(&(slack(b) * wa)).then(a.cmp(&b)));
        // Tijdeman's theorem says someone qualifies while the eligible set holds still;
        // after a change of it, fall back to the largest credit, as nginx does.
        match earliest {
            Some(&(i, _)) => i,
            None => eligible
                .iter()
                .max_by(|&&(a, _), &&(b, _)| credit[a].cmp(&credit[b]).then(b.cmp(&a)))
                .map(|&(i, _)| i)?,
        }
    };
    credit[chosen] = credit[chosen].saturating_sub(i64::try_from(total).unwrap_or(i64::MAX));
    Some(chosen)
}
