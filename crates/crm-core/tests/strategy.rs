//! A source's rule ([`crm_core::decide`]): the sticky owner takes a returning lead exactly
//! when it is eligible and never otherwise; a weighted-random source without stickiness
//! decides as the plain draw; a smooth source follows the smooth rule from its stored
//! credits; every decision's record reads back to the same decision and replays to its
//! choice; the insight report counts sticky and smooth choices beside the draws.

use crm_core::{
    Candidate, Decision, Exclusion, Fairness, OperatorId, OwnerSkipped, SourceRule, SourceState,
    StickyNote, Strategy as SourceStrategy, choose_avoiding, decide, exclusion, smooth_pick,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn candidate(id: i64, weight: i64) -> Candidate {
    Candidate {
        operator_id: OperatorId(id),
        weight,
        is_active: true,
        open_contacts: 0,
        max_active_contacts: 1_000,
        rate_limited: false,
    }
}

/// 1..=8 candidates with ids 1.., in every state the rule knows.
fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            1i64..=1_000,
            any::<bool>(),
            0i64..=3,
            0i64..=3,
            prop::bool::weighted(0.2),
        ),
        1..=8,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (weight, active, open, max, limited))| Candidate {
                operator_id: OperatorId(i as i64 + 1),
                weight,
                is_active: active || i % 3 == 0,
                open_contacts: open,
                max_active_contacts: max,
                rate_limited: limited,
            })
            .collect()
    })
}

fn rule() -> impl Strategy<Value = SourceRule> {
    (any::<bool>(), any::<bool>()).prop_map(|(smooth, sticky_owner)| SourceRule {
        strategy: if smooth {
            SourceStrategy::SmoothWeighted
        } else {
            SourceStrategy::WeightedRandom
        },
        sticky_owner,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Model check of stickiness: the owner is chosen exactly when the source keeps owners
    /// and the owner is eligible (a weight for the source, active, under its limit, not
    /// paced out, not just unassigned from); otherwise the record names it and the reason,
    /// which is the rule's own exclusion. Nobody ineligible is ever chosen.
    #[test]
    fn the_owner_takes_it_exactly_when_eligible(
        cs in candidates(),
        rule in rule(),
        owner in prop::option::of(0i64..=9),
        avoid in prop::option::of(0i64..=9),
        credit in prop::collection::vec(-3_000i64..=3_000, 0..=8),
        seed in any::<u64>(),
    ) {
        let owner = owner.map(OperatorId);
        let avoid = avoid.map(OperatorId);
        let state = SourceState { rule, owner, credit: &credit };
        let decision = decide(&cs, &state, avoid, &mut ChaCha8Rng::seed_from_u64(seed));
        let eligible = |id: OperatorId| {
            cs.iter().any(|c| c.operator_id == id && exclusion(c).is_none()) && Some(id) != avoid
        };
        if let Some(chosen) = decision.chosen {
            prop_assert!(eligible(chosen), "chose {chosen:?}, not eligible");
        }
        match (rule.sticky_owner, owner) {
            (true, Some(owner)) if eligible(owner) => {
                prop_assert_eq!(decision.chosen, Some(owner));
                prop_assert_eq!(decision.sticky, Some(StickyNote::Owner(owner)));
                prop_assert_eq!(decision.draw, None);
            }
            (true, Some(owner)) => {
                let expected = match cs.iter().find(|c| c.operator_id == owner) {
                    None => OwnerSkipped::NoWeight,
                    Some(c) => OwnerSkipped::Excluded(
                        exclusion(c).unwrap_or(Exclusion::UnassignedFrom),
                    ),
                };
                prop_assert_eq!(
                    decision.sticky,
                    Some(StickyNote::Fallback { owner, skipped: expected })
                );
            }
            _ => prop_assert_eq!(decision.sticky, None),
        }
        prop_assert_eq!(decision.strategy, rule.strategy);
    }

    /// Every decision's record reads back to the same decision (up to the facts a record
    /// keeps) and replays to the operator it chose; what the API shows of it (the keyed
    /// form) is the decision's own.
    #[test]
    fn every_record_reads_back_and_replays(
        cs in candidates(),
        rule in rule(),
        owner in prop::option::of(0i64..=9),
        avoid in prop::option::of(0i64..=9),
        credit in prop::collection::vec(-3_000i64..=3_000, 0..=8),
        seed in any::<u64>(),
    ) {
        let state = SourceState { rule, owner: owner.map(OperatorId), credit: &credit };
        let decision = decide(&cs, &state, avoid.map(OperatorId), &mut ChaCha8Rng::seed_from_u64(seed));
        let record = decision.record();
        let read = Decision::from_record(&record).expect("a record of this version");
        prop_assert_eq!(
            serde_json::to_string(&read).expect("serialisable"),
            serde_json::to_string(&decision).expect("serialisable")
        );
        prop_assert_eq!(read.replay(), decision.chosen);
        prop_assert_eq!(read.record(), record);
        prop_assert_eq!((read.strategy, read.sticky, &read.credit), (decision.strategy, decision.sticky, &decision.credit));
    }

    /// A weighted-random source that keeps no owners decides as the plain draw, from the
    /// same generator: its records are what they were before strategies existed.
    #[test]
    fn the_default_rule_is_the_plain_draw(
        cs in candidates(),
        avoid in prop::option::of(0i64..=9),
        seed in any::<u64>(),
    ) {
        let avoid = avoid.map(OperatorId);
        let state = SourceState::default();
        let ours = decide(&cs, &state, avoid, &mut ChaCha8Rng::seed_from_u64(seed));
        let plain = choose_avoiding(&cs, avoid, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(ours.record(), plain.record());
        prop_assert_eq!(ours, plain);
    }

    /// A smooth source picks as the smooth rule does from the stored credits, and leaves
    /// the credits the rule leaves; a sticky hit leaves them as they were.
    #[test]
    fn a_smooth_source_follows_its_credits(
        weights in prop::collection::vec(1i64..=1_000, 2..=12),
        picks in 1usize..=200,
    ) {
        let cs: Vec<Candidate> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| candidate(i as i64 + 1, w))
            .collect();
        let rule = SourceRule { strategy: SourceStrategy::SmoothWeighted, sticky_owner: false };
        let (mut stored, mut model) = (vec![0; cs.len()], vec![0; cs.len()]);
        for _ in 0..picks {
            let state = SourceState { rule, owner: None, credit: &stored };
            let decision = decide(&cs, &state, None, &mut ChaCha8Rng::seed_from_u64(0));
            let expected = smooth_pick(&cs, &mut model).map(|i| cs[i].operator_id);
            prop_assert_eq!(decision.chosen, expected);
            prop_assert_eq!(decision.draw, None);
            let credit = decision.credit.expect("a smooth pick records its credits");
            prop_assert_eq!(&credit.before, &stored);
            prop_assert_eq!(&credit.after, &model);
            stored = credit.after;
        }
    }
}

/// 100 % of a seeded run of returning leads go to their eligible owner, through a smooth
/// or a weighted source alike, and no generator number is spent on them.
#[test]
fn a_returning_lead_goes_to_its_eligible_owner() {
    let cs = [candidate(1, 3), candidate(2, 2), candidate(3, 1)];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for strategy in SourceStrategy::ALL {
        let rule = SourceRule {
            strategy,
            sticky_owner: true,
        };
        for n in 0..1_000 {
            let owner = OperatorId(n % 3 + 1);
            let state = SourceState {
                rule,
                owner: Some(owner),
                credit: &[7, -3, -4],
            };
            let decision = decide(&cs, &state, None, &mut rng);
            assert_eq!(decision.chosen, Some(owner));
            assert_eq!(decision.credit, None, "a sticky hit moves no credit");
        }
    }
    let untouched = ChaCha8Rng::seed_from_u64(5);
    assert_eq!(rng, untouched, "no number drawn for an owner");
}

/// The report counts sticky and smooth choices beside the draws: never in `expected` or
/// `assigned`, never flagged, however lopsided.
#[test]
fn sticky_and_smooth_choices_are_counted_beside_the_draws() {
    let cs = [candidate(1, 1), candidate(2, 1)];
    let weights = [(OperatorId(1), 1), (OperatorId(2), 1)];
    let mut fairness = Fairness::new(&weights);
    let sticky = SourceRule {
        strategy: SourceStrategy::WeightedRandom,
        sticky_owner: true,
    };
    let smooth = SourceRule {
        strategy: SourceStrategy::SmoothWeighted,
        sticky_owner: false,
    };
    let mut credit = vec![0, 0];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..500 {
        let hit = SourceState {
            rule: sticky,
            owner: Some(OperatorId(1)),
            credit: &[],
        };
        fairness.decision(&decide(&cs, &hit, None, &mut rng));
        let state = SourceState {
            rule: smooth,
            owner: None,
            credit: &credit,
        };
        let decision = decide(&cs, &state, None, &mut rng);
        credit = decision.credit.clone().expect("smooth").after;
        fairness.decision(&decision);
    }
    let report = fairness.finish();
    assert_eq!((report.decisions, report.draws), (1_000, 0));
    let [one, two] = [&report.shares[0], &report.shares[1]];
    assert_eq!((one.sticky, one.smooth, one.assigned), (500, 250, 0));
    assert_eq!((two.sticky, two.smooth, two.assigned), (0, 250, 0));
    assert!(!one.flag && !two.flag && one.z.is_none());
    assert_eq!((one.sticky_missed, two.sticky_missed), (0, 0));

    // An owner passed over is counted on it.
    let mut fairness = Fairness::new(&weights);
    let full = [
        Candidate {
            open_contacts: 1_000,
            ..candidate(1, 1)
        },
        candidate(2, 1),
    ];
    let missed = SourceState {
        rule: sticky,
        owner: Some(OperatorId(1)),
        credit: &[],
    };
    fairness.decision(&decide(&full, &missed, None, &mut rng));
    let report = fairness.finish();
    assert_eq!(report.shares[0].sticky_missed, 1);
    assert_eq!((report.shares[1].assigned, report.draws), (1, 1));
}
