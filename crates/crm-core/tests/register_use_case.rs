//! The registration use case [`crm_core::register_contact`] against crm-core's in-memory
//! unit of work ([`MemoryTx`]), whose claims can be lost to a simulated concurrent
//! registration. The tests look at what it ends up storing, not at which calls it received.

use std::collections::BTreeSet;

#[path = "support/memory.rs"]
mod memory;

use crm_core::{
    Contact, Entity, Exclusion, ExternalLeadId, IdempotencyKey, NewContact, OperatorId, Payload,
    SourceCode, SourceId, SourceRef, StoreError, register_contact, register_contact_once,
};
use memory::{MemoryOperator, MemoryTx};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SOURCE: SourceId = SourceId(7);
const SOURCE_CODE: &str = "tg_bot";

/// When a claim is lost: another replica takes the operator's last free places between
/// the read and the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Race {
    /// Claims succeed while there is room.
    Never,
    /// The first claim of this registration is lost, whoever is chosen.
    FirstClaim,
    /// Every claim is lost.
    EveryClaim,
}

/// A store of [`SOURCE`] and `operators`, whose claims are lost as `race` says.
fn store(operators: Vec<(i64, MemoryOperator)>, race: Race) -> MemoryTx {
    let code = SourceCode::parse(SOURCE_CODE).expect("valid code");
    let most_claims = 2 * operators.len();
    let tx = operators
        .into_iter()
        .fold(MemoryTx::new(SOURCE, code), |tx, (id, op)| {
            tx.with_operator(OperatorId(id), op)
        });
    if race == Race::Never {
        return tx;
    }
    let mut claims = 0;
    tx.with_rival(move |_| {
        claims += 1;
        // Turns a retry loop that never ends into a failure.
        assert!(claims <= most_claims, "the claim loop does not end");
        race == Race::EveryClaim || claims == 1
    })
}

/// An operator's load now (-1 when there is no such operator).
fn open(tx: &MemoryTx, id: i64) -> i64 {
    tx.operator(OperatorId(id))
        .map_or(-1, |op| op.open_contacts)
}

/// Operators that lost a claim to the other replica.
fn lost(tx: &MemoryTx) -> BTreeSet<OperatorId> {
    tx.lost_claims().iter().copied().collect()
}

fn operator(name: &str, weight: i64, is_active: bool, open: i64, max: i64) -> MemoryOperator {
    MemoryOperator {
        name: name.to_owned(),
        is_active,
        open_contacts: open,
        max_active_contacts: max,
        weight,
    }
}

/// Two operators that can take contacts, one switched off and one already full.
fn team() -> Vec<(i64, MemoryOperator)> {
    vec![
        (1, operator("ann", 10, true, 0, 3)),
        (2, operator("bob", 5, true, 1, 3)),
        (3, operator("cid", 50, false, 0, 3)),
        (4, operator("dan", 50, true, 2, 2)),
    ]
}

fn initial_open(id: i64) -> i64 {
    team()
        .into_iter()
        .find(|(i, _)| *i == id)
        .map_or(-1, |(_, op)| op.open_contacts)
}

fn new_contact(source: SourceRef, lead: &str) -> NewContact {
    NewContact {
        external_lead_id: ExternalLeadId::parse(lead).expect("valid external id"),
        source,
        payload: Payload::from_value(&serde_json::json!({ "text": "hi" })).expect("small payload"),
    }
}

fn assigned_to(contact: &Contact) -> Option<OperatorId> {
    contact.operator.as_ref().map(|op| op.id)
}

#[test]
fn unknown_source_is_not_found_and_nothing_is_stored() {
    let code = SourceCode::parse("no_such_bot").expect("valid code");
    for source in [SourceRef::Id(SourceId(999)), SourceRef::Code(code)] {
        let mut tx = store(team(), Race::Never);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let result = pollster::block_on(register_contact(
            &mut tx,
            &new_contact(source.clone(), "lead-1"),
            &mut rng,
        ));
        assert!(
            matches!(result, Err(StoreError::NotFound(Entity::Source))),
            "{source:?}: {result:?}"
        );
        assert!(tx.contacts().is_empty(), "{source:?} stored a contact");
        assert_eq!(open(&tx, 1) + open(&tx, 2), 1, "{source:?} changed a load");
    }
}

#[test]
fn a_known_source_by_code_assigns_an_eligible_operator() {
    let code = SourceCode::parse(SOURCE_CODE).expect("valid code");
    let mut tx = store(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let registered = pollster::block_on(register_contact(
        &mut tx,
        &new_contact(SourceRef::Code(code), "lead-1"),
        &mut rng,
    ))
    .expect("registration succeeds");

    assert_eq!(tx.contacts(), std::slice::from_ref(&registered.contact));
    let chosen = assigned_to(&registered.contact).expect("an operator is free");
    assert!(
        [OperatorId(1), OperatorId(2)].contains(&chosen),
        "{chosen} is off or full"
    );
    assert_eq!(registered.decision.chosen, Some(chosen));
    assert_eq!(
        open(&tx, 1) + open(&tx, 2),
        2,
        "exactly one place was taken"
    );
}

#[test]
fn a_lost_claim_is_retried_with_another_eligible_operator() {
    for seed in 0..100 {
        let mut tx = store(team(), Race::FirstClaim);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let registered = pollster::block_on(register_contact(
            &mut tx,
            &new_contact(SourceRef::Id(SOURCE), "lead-1"),
            &mut rng,
        ))
        .expect("registration succeeds");

        let [lost] = tx.lost_claims()[..] else {
            panic!(
                "seed {seed}: expected exactly one lost claim, got {:?}",
                tx.lost_claims()
            );
        };
        assert_eq!(tx.contacts().len(), 1, "seed {seed}");
        assert_eq!(tx.contacts()[0], registered.contact, "seed {seed}");
        let stored = assigned_to(&tx.contacts()[0]);
        let other = if lost == OperatorId(1) { 2 } else { 1 };
        assert_eq!(stored, Some(OperatorId(other)), "seed {seed}: lost {lost}");
        // The other replica filled the lost operator; ours took one place of the other.
        assert_eq!(open(&tx, lost.get()), 3, "seed {seed}");
        assert_eq!(open(&tx, other), initial_open(other) + 1, "seed {seed}");
        // The returned decision explains why the lost operator was passed over.
        let verdict = registered
            .decision
            .candidates
            .iter()
            .find(|v| v.candidate.operator_id == lost)
            .expect("the lost operator is still a candidate");
        assert_eq!(verdict.excluded, Some(Exclusion::AtCapacity), "seed {seed}");
    }
}

#[test]
fn the_first_pick_varies_with_the_seed() {
    // Guards the test above: it must see both operators lose their claim.
    let lost: BTreeSet<OperatorId> = (0..100)
        .flat_map(|seed| {
            let mut tx = store(team(), Race::FirstClaim);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let new = new_contact(SourceRef::Id(SOURCE), "lead-1");
            pollster::block_on(register_contact(&mut tx, &new, &mut rng))
                .expect("registration succeeds");
            lost(&tx)
        })
        .collect();
    assert_eq!(lost, BTreeSet::from([OperatorId(1), OperatorId(2)]));
}

#[test]
fn when_every_claim_is_lost_the_contact_is_stored_unassigned() {
    for seed in 0..50 {
        let mut tx = store(team(), Race::EveryClaim);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let registered = pollster::block_on(register_contact(
            &mut tx,
            &new_contact(SourceRef::Id(SOURCE), "lead-1"),
            &mut rng,
        ))
        .expect("registration ends and succeeds");

        assert_eq!(tx.contacts().len(), 1, "seed {seed}");
        // The answer, not the row, says how many waited ahead: nobody.
        assert_eq!(registered.contact.waiting_ahead, Some(0), "seed {seed}");
        assert_eq!(
            tx.contacts()[0],
            Contact {
                waiting_ahead: None,
                ..registered.contact.clone()
            },
            "seed {seed}"
        );
        assert_eq!(assigned_to(&tx.contacts()[0]), None, "seed {seed}");
        assert_eq!(lost(&tx), BTreeSet::from([OperatorId(1), OperatorId(2)]));
        assert_eq!(registered.decision.chosen, None, "seed {seed}");
        assert!(
            registered
                .decision
                .candidates
                .iter()
                .all(|v| v.excluded.is_some()),
            "seed {seed}: {:?}",
            registered.decision
        );
    }
}

#[test]
fn without_eligible_operators_the_contact_is_stored_unassigned() {
    let mut tx = store(
        vec![
            (1, operator("ann", 10, false, 0, 3)),
            (2, operator("bob", 5, true, 3, 3)),
        ],
        Race::Never,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let registered = pollster::block_on(register_contact(
        &mut tx,
        &new_contact(SourceRef::Id(SOURCE), "lead-1"),
        &mut rng,
    ))
    .expect("registration succeeds");

    assert_eq!(registered.contact.waiting_ahead, Some(0));
    assert_eq!(registered.decision.ahead, Some(0));
    assert_eq!(
        tx.contacts(),
        [Contact {
            waiting_ahead: None,
            ..registered.contact
        }]
    );
    assert_eq!(assigned_to(&tx.contacts()[0]), None);
    assert_eq!((open(&tx, 1), open(&tx, 2)), (0, 3));
}

#[test]
fn contacts_fill_operators_up_to_their_limits_then_go_unassigned() {
    let mut tx = store(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Ann has 3 free places and Bob 2: the sixth and seventh contacts find nobody.
    for n in 0..7 {
        let new = new_contact(SourceRef::Id(SOURCE), &format!("lead-{n}"));
        pollster::block_on(register_contact(&mut tx, &new, &mut rng))
            .expect("registration succeeds");
    }
    let per_operator = |id: Option<OperatorId>| {
        tx.contacts()
            .iter()
            .filter(|c| assigned_to(c) == id)
            .count()
    };
    assert_eq!(per_operator(Some(OperatorId(1))), 3);
    assert_eq!(per_operator(Some(OperatorId(2))), 2);
    assert_eq!(per_operator(None), 2);
    assert_eq!(
        (open(&tx, 1), open(&tx, 2), open(&tx, 3), open(&tx, 4)),
        (3, 3, 0, 2)
    );
}

#[test]
fn a_repeated_key_replays_the_first_answer_and_stores_nothing_new() {
    let mut tx = store(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let key = IdempotencyKey::new("admin", "retry-1", "body-a").expect("valid key");
    let contact = new_contact(SourceRef::Id(SOURCE), "lead-1");
    let first = pollster::block_on(register_contact_once(&mut tx, &contact, &key, &mut rng))
        .expect("first registration");
    assert!(!first.replayed);
    let loads: Vec<i64> = (1..=4).map(|id| open(&tx, id)).collect();
    let again = pollster::block_on(register_contact_once(&mut tx, &contact, &key, &mut rng))
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.contact, first.contact);
    assert_eq!(tx.contacts().len(), 1, "no second contact");
    assert_eq!(tx.lead_count(), 1, "no second lead");
    let after: Vec<i64> = (1..=4).map(|id| open(&tx, id)).collect();
    assert_eq!(loads, after, "no second assignment");

    // The same key from another credential is another key.
    let other = IdempotencyKey::new("source-key:9", "retry-1", "body-a").expect("valid key");
    let third = pollster::block_on(register_contact_once(&mut tx, &contact, &other, &mut rng))
        .expect("another credential");
    assert!(!third.replayed);
    assert_eq!(tx.contacts().len(), 2);
}

#[test]
fn a_key_reused_with_another_request_is_refused() {
    let mut tx = store(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let contact = new_contact(SourceRef::Id(SOURCE), "lead-1");
    let key = IdempotencyKey::new("admin", "k", "body-a").expect("valid key");
    pollster::block_on(register_contact_once(&mut tx, &contact, &key, &mut rng)).expect("first");
    let changed = IdempotencyKey::new("admin", "k", "body-b").expect("valid key");
    let err = pollster::block_on(register_contact_once(&mut tx, &contact, &changed, &mut rng))
        .expect_err("reused key");
    assert!(matches!(err, StoreError::IdempotencyKeyReused), "{err:?}");
    assert_eq!(tx.contacts().len(), 1);
}

#[test]
fn idempotency_keys_are_visible_ascii_of_bounded_length() {
    assert!(IdempotencyKey::new("c", "a-B_9.~!", "f").is_ok());
    assert!(IdempotencyKey::new("c", "", "f").is_err());
    assert!(IdempotencyKey::new("c", "has space", "f").is_err());
    assert!(IdempotencyKey::new("c", "ключ", "f").is_err());
    assert!(IdempotencyKey::new("c", &"k".repeat(255), "f").is_ok());
    assert!(IdempotencyKey::new("c", &"k".repeat(256), "f").is_err());
}
