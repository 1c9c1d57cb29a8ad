//! The sticky owner ([`crm_core::sticky_owner`]), model-based: over random teams and
//! owners, the owner is chosen exactly when the rule would let it take the contact, never
//! when it is switched off, full, paced out or without a weight, and a pass-over says why.

use crm_core::{Candidate, Exclusion, OperatorId, OwnerSkipped, Sticky, exclusion, sticky_owner};
use proptest::prelude::*;

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        1_i64..=10,
        any::<bool>(),
        0_i64..=3,
        0_i64..=3,
        any::<bool>(),
    )
        .prop_map(|(id, is_active, open, max, rate_limited)| Candidate {
            operator_id: OperatorId(id),
            weight: 1,
            is_active,
            open_contacts: open,
            max_active_contacts: max,
            rate_limited,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_owner_takes_the_contact_exactly_when_the_rule_allows(
        team in prop::collection::vec(candidate(), 0..6),
        owner in prop::option::of(1_i64..=12),
    ) {
        // Each operator once, as weight rows are.
        let mut seen = std::collections::HashSet::new();
        let team: Vec<Candidate> = team.into_iter().filter(|c| seen.insert(c.operator_id)).collect();
        let owner = owner.map(OperatorId);
        let found = owner.and_then(|o| team.iter().position(|c| c.operator_id == o));
        match sticky_owner(&team, owner) {
            Sticky::NoOwner => prop_assert!(owner.is_none()),
            Sticky::Owner(i) => {
                prop_assert_eq!(Some(i), found);
                prop_assert!(exclusion(&team[i]).is_none(), "never bent for stickiness");
                prop_assert!(team[i].is_active && team[i].open_contacts < team[i].max_active_contacts);
                prop_assert!(!team[i].rate_limited);
            }
            Sticky::Fallback { owner: o, skipped } => {
                prop_assert_eq!(Some(o), owner);
                match (found, skipped) {
                    (None, OwnerSkipped::NoWeight) => {}
                    (Some(i), OwnerSkipped::Excluded(reason)) => {
                        prop_assert_eq!(exclusion(&team[i]), Some(reason));
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}

#[test]
fn a_full_owner_is_passed_over_as_at_capacity() {
    let team = [Candidate {
        operator_id: OperatorId(4),
        weight: 1,
        is_active: true,
        open_contacts: 2,
        max_active_contacts: 2,
        rate_limited: false,
    }];
    assert_eq!(
        sticky_owner(&team, Some(OperatorId(4))),
        Sticky::Fallback {
            owner: OperatorId(4),
            skipped: OwnerSkipped::Excluded(Exclusion::AtCapacity),
        }
    );
    assert_eq!(sticky_owner(&team, None), Sticky::NoOwner);
}
