//! Properties of the distribution rule ([`crm_core::choose`], and [`crm_core::pick`], its
//! draw without the verdicts), checked against an oracle
//! written here from the rule's description rather than from its code, plus one
//! statistical test that the picks follow the weights.

use std::collections::HashMap;

use crm_core::{
    Candidate, Decision, Exclusion, OperatorId, Pick, Verdict, Weight, choose, choose_avoiding,
    exclusion, pick,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The rule as the specification states it: inactive first, then full, then out of its
/// pace, then weightless.
fn expected_exclusion(c: &Candidate) -> Option<Exclusion> {
    if !c.is_active {
        Some(Exclusion::Inactive)
    } else if c.open_contacts >= c.max_active_contacts {
        Some(Exclusion::AtCapacity)
    } else if c.rate_limited {
        Some(Exclusion::RateLimited)
    } else if c.weight <= 0 {
        Some(Exclusion::ZeroWeight)
    } else {
        None
    }
}

fn is_eligible(c: &Candidate) -> bool {
    expected_exclusion(c).is_none()
}

fn eligible_weight_sum(candidates: &[Candidate]) -> u64 {
    candidates
        .iter()
        .filter(|c| is_eligible(c))
        .map(|c| c.weight.unsigned_abs())
        .sum()
}

/// Up to 12 candidates with unique ids in shuffled order. Weights include zero and
/// negatives; loads and limits are small so that full operators are common (about 40 %),
/// a fifth of the operators are switched off and a tenth are rate-limited.
fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    let fields = (
        -2i64..=20,
        prop::bool::weighted(0.8),
        0i64..=3,
        0i64..=5,
        prop::bool::weighted(0.1),
    );
    prop::collection::btree_set(-5i64..=1_000, 0..=12).prop_flat_map(move |ids| {
        let n = ids.len();
        (
            Just(ids.into_iter().collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(fields.clone(), n),
        )
            .prop_map(|(ids, fields)| {
                ids.into_iter()
                    .zip(fields)
                    .map(
                        |(id, (weight, is_active, open, max, rate_limited))| Candidate {
                            operator_id: OperatorId(id),
                            weight,
                            is_active,
                            open_contacts: open,
                            max_active_contacts: max,
                            rate_limited,
                        },
                    )
                    .collect()
            })
    })
}

/// The eligible candidate whose slice of `0..total_weight` contains `draw`, slices laid
/// out in input order: how a reader of a stored decision recomputes the pick.
fn pick_for_draw(candidates: &[Candidate], draw: u64) -> Option<OperatorId> {
    let mut start = 0u64;
    for c in candidates.iter().filter(|c| is_eligible(c)) {
        let end = start + c.weight.unsigned_abs();
        if draw < end {
            return Some(c.operator_id);
        }
        start = end;
    }
    None
}

/// Active operators 1, 2, … with these weights, none holding a contact, each with room
/// for `max`.
fn active_with_room(weights: &[i64], max: i64) -> Vec<Candidate> {
    weights
        .iter()
        .zip(1i64..)
        .map(|(&weight, id)| Candidate {
            operator_id: OperatorId(id),
            weight,
            is_active: true,
            open_contacts: 0,
            max_active_contacts: max,
            rate_limited: false,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every candidate gets a verdict, in input order, with the candidate copied as given
    /// and the first reason of the rule that applies.
    #[test]
    fn verdicts_follow_the_rule_in_input_order(cs in candidates(), seed in any::<u64>()) {
        let decision = choose(&cs, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(decision.candidates.len(), cs.len());
        for (verdict, candidate) in decision.candidates.iter().zip(&cs) {
            prop_assert_eq!(&verdict.candidate, candidate);
            prop_assert_eq!(verdict.excluded, expected_exclusion(candidate));
            prop_assert_eq!(exclusion(candidate), expected_exclusion(candidate));
        }
    }

    /// The pick is one of the candidates and never an excluded one.
    #[test]
    fn picks_only_eligible_candidates(cs in candidates(), seed in any::<u64>()) {
        let decision = choose(&cs, &mut ChaCha8Rng::seed_from_u64(seed));
        if let Some(chosen) = decision.chosen {
            let picked = cs.iter().find(|c| c.operator_id == chosen);
            prop_assert!(picked.is_some(), "{chosen} is not a candidate");
            prop_assert!(picked.is_some_and(is_eligible), "{chosen} is excluded: {picked:?}");
        }
    }

    /// Nobody is chosen exactly when nobody is eligible; then nothing is drawn either.
    #[test]
    fn chosen_is_none_iff_nothing_is_eligible(cs in candidates(), seed in any::<u64>()) {
        let decision = choose(&cs, &mut ChaCha8Rng::seed_from_u64(seed));
        let any_eligible = cs.iter().any(is_eligible);
        prop_assert_eq!(decision.chosen.is_some(), any_eligible);
        prop_assert_eq!(decision.draw.is_some(), any_eligible);
    }

    /// The total is the sum of the eligible weights, the draw falls inside it, and the
    /// draw alone explains the pick.
    #[test]
    fn total_and_draw_explain_the_pick(cs in candidates(), seed in any::<u64>()) {
        let decision = choose(&cs, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(decision.total_weight, eligible_weight_sum(&cs));
        if let Some(draw) = decision.draw {
            prop_assert!(draw < decision.total_weight, "draw {draw} >= {}", decision.total_weight);
            prop_assert_eq!(decision.chosen, pick_for_draw(&cs, draw));
        }
    }

    /// The same seed replays the same sequence of decisions, and a call with nothing
    /// eligible consumes no randomness, so it does not shift the decisions after it.
    #[test]
    fn same_seed_same_sequence(
        lists in prop::collection::vec(candidates(), 1..=6),
        seed in any::<u64>(),
    ) {
        let run = |seed: u64| -> Vec<Decision> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            lists.iter().map(|cs| choose(cs, &mut rng)).collect()
        };
        prop_assert_eq!(run(seed), run(seed));

        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for cs in &lists {
            let before = rng.clone();
            let decision = choose(cs, &mut rng);
            if decision.chosen.is_none() {
                prop_assert_eq!(&rng, &before, "randomness used with nobody eligible");
            }
        }
    }

    /// `pick`, checked against the oracle on its own: the eligible total, a draw inside it
    /// exactly when someone is eligible (and no randomness used otherwise), the operator
    /// whose slice holds the draw. And it is `choose` without the verdicts: the same seed
    /// gives the same figures and leaves the generator in the same state.
    #[test]
    fn pick_follows_the_rule_and_agrees_with_choose(
        lists in prop::collection::vec(candidates(), 1..=6),
        seed in any::<u64>(),
    ) {
        let mut for_pick = ChaCha8Rng::seed_from_u64(seed);
        let mut for_choose = ChaCha8Rng::seed_from_u64(seed);
        for cs in &lists {
            let before = for_pick.clone();
            let picked = pick(cs, &mut for_pick);
            prop_assert_eq!(picked.total_weight, eligible_weight_sum(cs));
            prop_assert_eq!(picked.draw.is_some(), cs.iter().any(is_eligible));
            match picked.draw {
                Some(draw) => {
                    prop_assert!(draw < picked.total_weight);
                    prop_assert_eq!(picked.chosen, pick_for_draw(cs, draw));
                }
                None => {
                    prop_assert_eq!(picked.chosen, None);
                    prop_assert_eq!(&for_pick, &before, "randomness used with nobody eligible");
                }
            }
            let decision = choose(cs, &mut for_choose);
            prop_assert_eq!(
                picked,
                Pick {
                    total_weight: decision.total_weight,
                    draw: decision.draw,
                    chosen: decision.chosen,
                }
            );
            prop_assert_eq!(&for_pick, &for_choose);
        }
    }

    /// Any weight at all, up to `i64::MAX`, is safe: at or below zero it excludes, above
    /// [`Weight::MAX`] it counts as that, so the total cannot overflow (in a debug build
    /// an overflow would panic here) and the draw still falls inside it.
    #[test]
    fn extreme_weights_are_capped(
        weights in prop::collection::vec(any::<i64>(), 0..=64),
        seed in any::<u64>(),
    ) {
        let cs = active_with_room(&weights, 1);
        let capped: u64 = weights
            .iter()
            .filter(|&&w| w > 0)
            .map(|&w| w.min(Weight::MAX).unsigned_abs())
            .sum();
        let picked = pick(&cs, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(picked.total_weight, capped);
        prop_assert_eq!(picked.draw.is_some(), capped > 0);
        if let Some(draw) = picked.draw {
            prop_assert!(draw < capped, "draw {draw} >= {capped}");
        }
        let decision = choose(&cs, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(decision.chosen, picked.chosen);
    }

    /// Feeding each pick back as one more open contact fills the operators one by one:
    /// no one goes over its limit, every intermediate decision shows the current loads,
    /// and when the rule finally chooses nobody every candidate carries its reason, each
    /// initially eligible operator now at capacity with exactly its free places used.
    #[test]
    fn exhaustion_is_explained(cs in candidates(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut state = cs.clone();
        let free: u64 = cs
            .iter()
            .filter(|c| is_eligible(c))
            .map(|c| (c.max_active_contacts - c.open_contacts).unsigned_abs())
            .sum();
        let mut picks: HashMap<OperatorId, i64> = HashMap::new();
        let mut last = choose(&state, &mut rng);
        let mut rounds = 0u64;
        while let Some(chosen) = last.chosen {
            rounds += 1;
            prop_assert!(rounds <= free, "more picks than free places ({free})");
            let slot = state.iter_mut().find(|c| c.operator_id == chosen);
            prop_assert!(slot.is_some(), "{chosen} is not a candidate");
            if let Some(c) = slot {
                prop_assert!(c.open_contacts < c.max_active_contacts, "{chosen} was full");
                c.open_contacts += 1;
            }
            *picks.entry(chosen).or_default() += 1;
            last = choose(&state, &mut rng);
            let seen: Vec<Candidate> = last.candidates.iter().map(|v| v.candidate).collect();
            prop_assert_eq!(&seen, &state);
        }
        prop_assert_eq!(rounds, free);
        prop_assert_eq!(last.total_weight, 0);
        for (verdict, original) in last.candidates.iter().zip(&cs) {
            prop_assert!(verdict.excluded.is_some(), "{verdict:?} is unexplained");
            if is_eligible(original) {
                prop_assert_eq!(verdict.excluded, Some(Exclusion::AtCapacity));
                prop_assert_eq!(
                    picks.get(&original.operator_id).copied().unwrap_or(0),
                    original.max_active_contacts - original.open_contacts
                );
            } else {
                prop_assert_eq!(verdict.excluded, expected_exclusion(original));
                prop_assert!(!picks.contains_key(&original.operator_id));
            }
        }
    }
}

/// Over many picks the frequencies match the weights: Pearson's chi-square goodness of
/// fit, with an ineligible heavyweight mixed in that must never be picked.
///
/// The seed is fixed, so the test is deterministic; the bound is the 0.999 quantile, so a
/// correct rule passes for all but one seed in a thousand, while a rule that ignored the
/// weights (uniform picks give a statistic in the tens of thousands here) or the
/// exclusions fails.
#[test]
fn frequencies_converge_to_weights() {
    const PICKS: u32 = 200_000;
    /// Chi-square 0.999 quantile for 4 degrees of freedom (5 eligible operators - 1).
    const CRITICAL_DF4_P999: f64 = 18.467;

    let weights = [1i64, 2, 3, 4, 10];
    let mut candidates = active_with_room(&weights, 1_000);
    let switched_off = OperatorId(99);
    candidates.insert(
        2,
        Candidate {
            operator_id: switched_off,
            weight: 50,
            is_active: false,
            open_contacts: 0,
            max_active_contacts: 1_000,
            rate_limited: false,
        },
    );

    let mut rng = ChaCha8Rng::seed_from_u64(20_240_601);
    let mut counts: HashMap<OperatorId, u32> = HashMap::new();
    for _ in 0..PICKS {
        let chosen = choose(&candidates, &mut rng)
            .chosen
            .expect("some candidate is eligible");
        *counts.entry(chosen).or_default() += 1;
    }

    assert_eq!(
        counts.get(&switched_off),
        None,
        "an inactive operator was picked"
    );
    let total_weight: i64 = weights.iter().sum();
    let chi_square: f64 = weights
        .iter()
        .zip(1i64..)
        .map(|(&weight, id)| {
            let observed = f64::from(counts.get(&OperatorId(id)).copied().unwrap_or(0));
            let expected = f64::from(PICKS) * weight as f64 / total_weight as f64;
            (observed - expected).powi(2) / expected
        })
        .sum();
    assert!(
        chi_square < CRITICAL_DF4_P999,
        "chi-square {chi_square:.3} >= {CRITICAL_DF4_P999} for counts {counts:?}"
    );
}

/// Any decision, including ones the rule would never produce (the record must not care).
fn any_decision() -> impl Strategy<Value = Decision> {
    let verdict = (
        any::<i64>(),
        any::<i64>(),
        any::<bool>(),
        any::<i64>(),
        any::<i64>(),
        prop::option::of(prop_oneof![
            Just(Exclusion::Inactive),
            Just(Exclusion::AtCapacity),
            Just(Exclusion::RateLimited),
            Just(Exclusion::ZeroWeight),
            Just(Exclusion::UnassignedFrom),
        ]),
    )
        .prop_map(|(id, weight, is_active, open, max, excluded)| Verdict {
            candidate: Candidate {
                operator_id: OperatorId(id),
                weight,
                is_active,
                open_contacts: open,
                max_active_contacts: max,
                rate_limited: false,
            },
            excluded,
        });
    (
        prop::collection::vec(verdict, 0..=12),
        any::<u64>(),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<i64>().prop_map(OperatorId)),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(candidates, total_weight, draw, chosen, ahead)| Decision {
            candidates,
            total_weight,
            draw,
            chosen,
            ahead,
            ..Decision::default()
        })
}

proptest! {
    /// The stored (compact) record reads back to itself, for decisions of the rule and for
    /// arbitrary ones (extreme integers); for the rule's, what the API shows of it (the
    /// keyed form) is what it showed of the same decision stored keyed, as before.
    #[test]
    fn a_stored_record_reads_back_as_stored_and_shows_as_before(
        decision in any_decision(),
        candidates in candidates(),
        seed in any::<u64>(),
    ) {
        let stored = decision.record();
        let read = Decision::from_record(&stored).expect("a compact record");
        prop_assert_eq!(read.record(), stored);
        let chosen = choose(&candidates, &mut ChaCha8Rng::seed_from_u64(seed));
        let keyed = serde_json::to_string(&chosen).expect("serialisable");
        let read = Decision::from_record(&chosen.record()).expect("a compact record");
        prop_assert_eq!(serde_json::to_string(&read).expect("serialisable"), keyed.clone());
        let old = Decision::from_record(&keyed).expect("a keyed record");
        prop_assert_eq!(old.record(), chosen.record());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// A stored record read back says what was decided, and replaying its draw over its
    /// candidates gives the operator it chose (and nobody when there was no draw); the
    /// record of a contact queued behind others replays to nobody.
    #[test]
    fn a_stored_record_replays_to_its_choice(
        cs in candidates(),
        seed in any::<u64>(),
        avoid in prop::option::of(-5i64..=1_000),
    ) {
        let avoid = avoid.map(OperatorId);
        let decision = choose_avoiding(&cs, avoid, &mut ChaCha8Rng::seed_from_u64(seed));
        let stored = Decision::from_record(&decision.record()).expect("a stored record");
        prop_assert_eq!(&stored.draw, &decision.draw);
        prop_assert_eq!(&stored.chosen, &decision.chosen);
        prop_assert_eq!(stored.total_weight, decision.total_weight);
        prop_assert_eq!(stored.replay(), decision.chosen);
        let queued = Decision::from_record(&crm_core::queued(&cs).record()).expect("record");
        prop_assert_eq!(queued.replay(), None);
    }
}

proptest! {
    /// Passing over the operator a contact was just taken from: it is never chosen; it is
    /// excluded as `unassigned_from` exactly when nothing else excludes it; every other
    /// verdict is the plain rule's; and the draw runs over the others' weights as the plain
    /// rule would if that operator were not eligible.
    #[test]
    fn an_avoided_operator_is_passed_over_and_nothing_else_changes(
        cs in candidates(),
        seed in any::<u64>(),
        pick_avoided in any::<prop::sample::Index>(),
    ) {
        let avoid = (!cs.is_empty()).then(|| cs[pick_avoided.index(cs.len())].operator_id);
        let decision = choose_avoiding(&cs, avoid, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert!(avoid.is_none() || decision.chosen != avoid);
        for (verdict, c) in decision.candidates.iter().zip(&cs) {
            let expected = match expected_exclusion(c) {
                None if Some(c.operator_id) == avoid => Some(Exclusion::UnassignedFrom),
                other => other,
            };
            prop_assert_eq!(verdict.excluded, expected);
        }
        // The same as the plain rule over candidates where the avoided one is switched off.
        let without: Vec<Candidate> = cs
            .iter()
            .map(|c| Candidate {
                is_active: c.is_active && Some(c.operator_id) != avoid,
                ..*c
            })
            .collect();
        let plain = choose(&without, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!((decision.total_weight, decision.draw, decision.chosen),
            (plain.total_weight, plain.draw, plain.chosen));
        // Avoiding nobody among the candidates is the plain rule exactly.
        let nobody = choose_avoiding(&cs, Some(OperatorId(i64::MIN)), &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(nobody, choose(&cs, &mut ChaCha8Rng::seed_from_u64(seed)));
    }
}
