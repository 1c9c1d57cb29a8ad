//! Realised against expected shares ([`crm_core::distribution`]) on seeded decisions: the
//! weighted rule is never flagged, a rule biased by a few percent is, and the figures add
//! up to the draws they were read from.

use crm_core::{Candidate, Decision, OperatorId, choose, distribution};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WEIGHTS: [i64; 5] = [1, 2, 3, 4, 10];

fn weights() -> Vec<(OperatorId, i64)> {
    (1..=5).map(OperatorId).zip(WEIGHTS).collect()
}

/// The five operators as one decision saw them: each switched off one time in five and full
/// one time in five, so who is eligible changes from draw to draw.
fn candidates(rng: &mut ChaCha8Rng) -> Vec<Candidate> {
    weights()
        .into_iter()
        .map(|(operator_id, weight)| Candidate {
            operator_id,
            weight,
            is_active: rng.random_bool(0.8),
            open_contacts: i64::from(rng.random_bool(0.2)),
            max_active_contacts: 1,
            rate_limited: false,
        })
        .collect()
}

/// 10,000 decisions of `rule` over random availability.
fn decisions(seed: u64, rule: impl Fn(&[Candidate], &mut ChaCha8Rng) -> Decision) -> Vec<Decision> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..10_000)
        .map(|_| {
            let cs = candidates(&mut rng);
            rule(&cs, &mut rng)
        })
        .collect()
}

#[test]
fn the_weighted_rule_is_not_flagged() {
    for seed in 0..5 {
        let decided = decisions(seed, choose);
        let report = distribution(&weights(), &decided);
        assert_eq!(report.decisions, 10_000);
        for share in &report.shares {
            assert!(!share.flag, "seed {seed}: {share:?}");
            assert!(share.z.is_some());
        }
        let assigned: u64 = report.shares.iter().map(|s| s.assigned).sum();
        assert_eq!(assigned, report.draws);
        let expected: f64 = report.shares.iter().map(|s| s.expected).sum();
        assert!((expected - report.draws as f64).abs() < 1e-6, "{expected}");
        // Switched off one time in five: the share of decisions that said so.
        for share in &report.shares {
            let inactive = share.inactive as f64 / report.decisions as f64;
            assert!((inactive - 0.2).abs() < 0.02, "{share:?}");
        }
    }
}

/// A rule that, 4 % of the time, gives the contact to operator 1 whenever it is eligible,
/// whatever the draw said.
fn biased(cs: &[Candidate], rng: &mut ChaCha8Rng) -> Decision {
    let mut decision = choose(cs, rng);
    let favourite = OperatorId(1);
    let eligible = decision
        .candidates
        .iter()
        .any(|v| v.candidate.operator_id == favourite && v.excluded.is_none());
    if eligible && rng.random_bool(0.04) {
        decision.chosen = Some(favourite);
    }
    decision
}

#[test]
fn a_rule_biased_by_a_few_percent_is_flagged() {
    for seed in 0..5 {
        let report = distribution(&weights(), &decisions(seed, biased));
        let favourite = &report.shares[0];
        assert_eq!(favourite.operator_id, OperatorId(1));
        assert!(favourite.flag, "seed {seed}: {favourite:?}");
        assert!(favourite.z.is_some_and(|z| z > 3.0));
    }
}

#[test]
fn operators_without_a_weight_now_are_left_out_and_the_configured_share_is_todays() {
    let decided = decisions(9, choose);
    let today = [
        (OperatorId(5), 10),
        (OperatorId(2), 30),
        (OperatorId(77), 10),
    ];
    let report = distribution(&today, &decided);
    let ids: Vec<i64> = report.shares.iter().map(|s| s.operator_id.get()).collect();
    assert_eq!(ids, [2, 5, 77]);
    let configured: Vec<f64> = report.shares.iter().map(|s| s.configured_share).collect();
    assert_eq!(configured, [0.6, 0.2, 0.2]);
    let newcomer = &report.shares[2];
    assert_eq!(
        (newcomer.assigned, newcomer.z, newcomer.flag),
        (0, None, false)
    );
}

proptest! {
    /// Whatever the decisions, every draw is assigned once and expected once in total, and
    /// `z` is missing exactly when the variance is zero.
    #[test]
    fn the_figures_add_up_to_the_draws(seed in any::<u64>(), n in 0_usize..300) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let decided: Vec<Decision> = (0..n)
            .map(|_| {
                let cs = candidates(&mut rng);
                choose(&cs, &mut rng)
            })
            .collect();
        let report = distribution(&weights(), &decided);
        let draws = decided.iter().filter(|d| d.chosen.is_some()).count() as u64;
        prop_assert_eq!(report.draws, draws);
        prop_assert_eq!(report.shares.iter().map(|s| s.assigned).sum::<u64>(), draws);
        let expected: f64 = report.shares.iter().map(|s| s.expected).sum();
        prop_assert!((expected - draws as f64).abs() < 1e-6);
        for share in &report.shares {
            // Zero exactly when, at every draw, it was either not eligible or the only one.
            let uncertain = decided.iter().filter(|d| d.chosen.is_some()).any(|d| {
                let eligible: Vec<OperatorId> = d
                    .candidates
                    .iter()
                    .filter(|v| v.excluded.is_none())
                    .map(|v| v.candidate.operator_id)
                    .collect();
                eligible.contains(&share.operator_id) && eligible.len() > 1
            });
            prop_assert_eq!(share.z.is_some(), uncertain, "{:?}", share);
        }
    }
}

mod dry_run {
    use crm_core::{predict, preview_drain};

    use super::*;

    fn free(id: i64, weight: i64, open: i64, max: i64) -> Candidate {
        Candidate {
            operator_id: OperatorId(id),
            weight,
            is_active: true,
            open_contacts: open,
            max_active_contacts: max,
            rate_limited: false,
        }
    }

    #[test]
    fn predicted_shares_follow_the_weights_and_skip_full_operators() {
        let cs = [free(1, 3, 0, 5), free(2, 1, 0, 5), free(3, 50, 5, 5)];
        let once = predict(&cs, 10_000, &mut ChaCha8Rng::seed_from_u64(1));
        let again = predict(&cs, 10_000, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(once, again, "deterministic for a seed");
        assert_eq!(once[2], (OperatorId(3), 0), "at capacity stays excluded");
        let share = once[0].1 as f64 / 10_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        assert_eq!(once.iter().map(|(_, n)| n).sum::<u64>(), 10_000);
        let nobody = predict(&[free(1, 3, 5, 5)], 100, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(nobody, [(OperatorId(1), 0)]);
    }

    proptest! {
        /// A preview never fills an operator past its limit, serves as many as there is room
        /// for, and leaves the rest waiting.
        #[test]
        fn a_preview_fills_the_room_and_no_more(
            rooms in prop::collection::vec((0_i64..6, 0_i64..6, 1_i64..10), 1..6),
            waiting in 0_u64..40,
            seed in any::<u64>(),
        ) {
            let cs: Vec<Candidate> = rooms
                .iter()
                .enumerate()
                .map(|(i, &(open, room, w))| free(i as i64 + 1, w, open, open + room))
                .collect();
            let room: u64 = rooms.iter().map(|&(_, room, _)| room as u64).sum();
            let preview = preview_drain(&cs, waiting, &mut ChaCha8Rng::seed_from_u64(seed));
            let taken: u64 = preview.taken.iter().map(|(_, n)| n).sum();
            prop_assert_eq!(taken, waiting.min(room));
            prop_assert_eq!(preview.still_waiting, waiting - taken);
            for ((_, n), &(_, room, _)) in preview.taken.iter().zip(&rooms) {
                prop_assert!(*n <= room as u64);
            }
        }
    }
}
