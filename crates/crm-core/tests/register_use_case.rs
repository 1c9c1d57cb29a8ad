//! The registration use case [`crm_core::register_contact`] against an in-memory unit of
//! work whose claims can be lost to a simulated concurrent registration. The tests look at
//! what the fake ends up storing, not at which calls it received.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use crm_core::{
    Candidate, Contact, ContactId, ContactStatus, Decision, Entity, Exclusion, ExternalLeadId,
    IdempotencyKey, Inserted, KeyClaim, LeadId, NewContact, OperatorId, OperatorSummary, Payload,
    Prepared, RegistrationTx, SourceCode, SourceId, SourceRef, StoreError, register_contact,
    register_contact_once,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SOURCE: SourceId = SourceId(7);
const SOURCE_CODE: &str = "tg_bot";

#[derive(Debug, Clone)]
struct FakeOperator {
    name: String,
    is_active: bool,
    open: i64,
    max: i64,
    /// The operator's weight for [`SOURCE`].
    weight: i64,
}

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

/// One registration's unit of work over a store of one source and a few operators.
#[derive(Debug)]
struct FakeTx {
    operators: BTreeMap<OperatorId, FakeOperator>,
    leads: Vec<(LeadId, String)>,
    /// The lead the registration under way prepared.
    lead: Option<LeadId>,
    contacts: Vec<Contact>,
    race: Race,
    /// Operators that lost a claim to the other replica.
    lost: BTreeSet<OperatorId>,
    /// Claims seen so far, to turn a retry loop that never ends into a failure.
    claims: usize,
    /// Idempotency keys: (credential, key) → (fingerprint, answer).
    keys: BTreeMap<(String, String), (String, Option<Contact>)>,
}

impl FakeTx {
    fn new(operators: impl IntoIterator<Item = (i64, FakeOperator)>, race: Race) -> Self {
        Self {
            operators: operators
                .into_iter()
                .map(|(id, op)| (OperatorId(id), op))
                .collect(),
            leads: Vec::new(),
            lead: None,
            contacts: Vec::new(),
            race,
            lost: BTreeSet::new(),
            claims: 0,
            keys: BTreeMap::new(),
        }
    }

    fn summary(&self, id: OperatorId) -> Option<OperatorSummary> {
        self.operators.get(&id).map(|op| OperatorSummary {
            id,
            name: op.name.clone(),
            is_active: op.is_active,
        })
    }

    fn open(&self, id: i64) -> i64 {
        self.operators.get(&OperatorId(id)).map_or(-1, |op| op.open)
    }
}

impl RegistrationTx for FakeTx {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        let id = (key.credential().to_owned(), key.key().to_owned());
        Ok(match self.keys.get(&id) {
            None => {
                self.keys.insert(id, (key.fingerprint().to_owned(), None));
                KeyClaim::Claimed
            }
            Some((fingerprint, _)) if fingerprint != key.fingerprint() => KeyClaim::Reused,
            Some((_, Some(contact))) => KeyClaim::Replay(contact.clone()),
            Some((_, None)) => return Err(StoreError::Internal("key without answer".into())),
        })
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        let id = (key.credential().to_owned(), key.key().to_owned());
        match self.keys.get_mut(&id) {
            Some(entry) => {
                entry.1 = Some(contact.clone());
                Ok(())
            }
            None => Err(StoreError::Internal("recording an unclaimed key".into())),
        }
    }

    async fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let known = match source {
            SourceRef::Id(id) => *id == SOURCE,
            SourceRef::Code(code) => code.as_str() == SOURCE_CODE,
        };
        if !known {
            return Err(StoreError::NotFound(Entity::Source));
        }
        let lead_id = match self.leads.iter().find(|(_, e)| e == external_id.as_str()) {
            Some((id, _)) => *id,
            None => {
                let id = LeadId(i64::try_from(self.leads.len()).unwrap_or(i64::MAX) + 1);
                self.leads.push((id, external_id.as_str().to_owned()));
                id
            }
        };
        let candidates = self
            .operators
            .iter()
            .map(|(&operator_id, op)| Candidate {
                operator_id,
                weight: op.weight,
                is_active: op.is_active,
                open_contacts: op.open,
                max_active_contacts: op.max,
            })
            .collect();
        self.lead = Some(lead_id);
        Ok(Prepared {
            source_id: SOURCE,
            candidates,
        })
    }

    async fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        _decision: &Decision,
    ) -> Result<Inserted, StoreError> {
        if let Some(id) = operator {
            self.claims += 1;
            if self.claims > 2 * self.operators.len() {
                return Err(StoreError::Internal("the claim loop does not end".into()));
            }
            let lose = match self.race {
                Race::Never => false,
                Race::FirstClaim => self.claims == 1,
                Race::EveryClaim => true,
            };
            let Some(op) = self.operators.get_mut(&id) else {
                return Err(StoreError::Internal(
                    format!("claim of unknown {id}").into(),
                ));
            };
            if lose {
                op.open = op.open.max(op.max);
                self.lost.insert(id);
            }
            // The claim itself: raise the counter only while it is below the limit.
            if op.open >= op.max {
                return Ok(Inserted::OperatorFull);
            }
            op.open += 1;
        }
        let lead_id = self
            .lead
            .ok_or_else(|| StoreError::Internal("insert before prepare".into()))?;
        let contact = Contact {
            id: ContactId(i64::try_from(self.contacts.len()).unwrap_or(i64::MAX) + 1),
            lead_id,
            source_id: prepared.source_id,
            operator: operator.and_then(|id| self.summary(id)),
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: Utc::now(),
            closed_at: None,
        };
        self.contacts.push(contact.clone());
        Ok(Inserted::Stored(contact))
    }
}

fn operator(name: &str, weight: i64, is_active: bool, open: i64, max: i64) -> FakeOperator {
    FakeOperator {
        name: name.to_owned(),
        is_active,
        open,
        max,
        weight,
    }
}

/// Two operators that can take contacts, one switched off and one already full.
fn team() -> Vec<(i64, FakeOperator)> {
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
        .map_or(-1, |(_, op)| op.open)
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
        let mut tx = FakeTx::new(team(), Race::Never);
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
        assert!(tx.contacts.is_empty(), "{source:?} stored a contact");
        assert_eq!(tx.open(1) + tx.open(2), 1, "{source:?} changed a load");
    }
}

#[test]
fn a_known_source_by_code_assigns_an_eligible_operator() {
    let code = SourceCode::parse(SOURCE_CODE).expect("valid code");
    let mut tx = FakeTx::new(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let registered = pollster::block_on(register_contact(
        &mut tx,
        &new_contact(SourceRef::Code(code), "lead-1"),
        &mut rng,
    ))
    .expect("registration succeeds");

    assert_eq!(tx.contacts, std::slice::from_ref(&registered.contact));
    let chosen = assigned_to(&registered.contact).expect("an operator is free");
    assert!(
        [OperatorId(1), OperatorId(2)].contains(&chosen),
        "{chosen} is off or full"
    );
    assert_eq!(registered.decision.chosen, Some(chosen));
    assert_eq!(tx.open(1) + tx.open(2), 2, "exactly one place was taken");
}

#[test]
fn a_lost_claim_is_retried_with_another_eligible_operator() {
    for seed in 0..100 {
        let mut tx = FakeTx::new(team(), Race::FirstClaim);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let registered = pollster::block_on(register_contact(
            &mut tx,
            &new_contact(SourceRef::Id(SOURCE), "lead-1"),
            &mut rng,
        ))
        .expect("registration succeeds");

        let lost: Vec<OperatorId> = tx.lost.iter().copied().collect();
        let [lost] = lost[..] else {
            panic!("seed {seed}: expected exactly one lost claim, got {lost:?}");
        };
        assert_eq!(tx.contacts.len(), 1, "seed {seed}");
        assert_eq!(tx.contacts[0], registered.contact, "seed {seed}");
        let stored = assigned_to(&tx.contacts[0]);
        let other = if lost == OperatorId(1) { 2 } else { 1 };
        assert_eq!(stored, Some(OperatorId(other)), "seed {seed}: lost {lost}");
        // The other replica filled the lost operator; ours took one place of the other.
        assert_eq!(tx.open(lost.get()), 3, "seed {seed}");
        assert_eq!(tx.open(other), initial_open(other) + 1, "seed {seed}");
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
            let mut tx = FakeTx::new(team(), Race::FirstClaim);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let new = new_contact(SourceRef::Id(SOURCE), "lead-1");
            pollster::block_on(register_contact(&mut tx, &new, &mut rng))
                .expect("registration succeeds");
            tx.lost
        })
        .collect();
    assert_eq!(lost, BTreeSet::from([OperatorId(1), OperatorId(2)]));
}

#[test]
fn when_every_claim_is_lost_the_contact_is_stored_unassigned() {
    for seed in 0..50 {
        let mut tx = FakeTx::new(team(), Race::EveryClaim);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let registered = pollster::block_on(register_contact(
            &mut tx,
            &new_contact(SourceRef::Id(SOURCE), "lead-1"),
            &mut rng,
        ))
        .expect("registration ends and succeeds");

        assert_eq!(tx.contacts.len(), 1, "seed {seed}");
        assert_eq!(tx.contacts[0], registered.contact, "seed {seed}");
        assert_eq!(assigned_to(&tx.contacts[0]), None, "seed {seed}");
        assert_eq!(tx.lost, BTreeSet::from([OperatorId(1), OperatorId(2)]));
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
    let mut tx = FakeTx::new(
        [
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

    assert_eq!(tx.contacts, [registered.contact]);
    assert_eq!(assigned_to(&tx.contacts[0]), None);
    assert_eq!((tx.open(1), tx.open(2)), (0, 3));
}

#[test]
fn contacts_fill_operators_up_to_their_limits_then_go_unassigned() {
    let mut tx = FakeTx::new(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Ann has 3 free places and Bob 2: the sixth and seventh contacts find nobody.
    for n in 0..7 {
        let new = new_contact(SourceRef::Id(SOURCE), &format!("lead-{n}"));
        pollster::block_on(register_contact(&mut tx, &new, &mut rng))
            .expect("registration succeeds");
    }
    let per_operator =
        |id: Option<OperatorId>| tx.contacts.iter().filter(|c| assigned_to(c) == id).count();
    assert_eq!(per_operator(Some(OperatorId(1))), 3);
    assert_eq!(per_operator(Some(OperatorId(2))), 2);
    assert_eq!(per_operator(None), 2);
    assert_eq!(
        (tx.open(1), tx.open(2), tx.open(3), tx.open(4)),
        (3, 3, 0, 2)
    );
}

#[test]
fn a_repeated_key_replays_the_first_answer_and_stores_nothing_new() {
    let mut tx = FakeTx::new(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let key = IdempotencyKey::new("admin", "retry-1", "body-a").expect("valid key");
    let contact = new_contact(SourceRef::Id(SOURCE), "lead-1");
    let first = pollster::block_on(register_contact_once(&mut tx, &contact, &key, &mut rng))
        .expect("first registration");
    assert!(!first.replayed);
    let loads: Vec<i64> = (1..=4).map(|id| tx.open(id)).collect();
    let again = pollster::block_on(register_contact_once(&mut tx, &contact, &key, &mut rng))
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.contact, first.contact);
    assert_eq!(tx.contacts.len(), 1, "no second contact");
    assert_eq!(tx.leads.len(), 1, "no second lead");
    let after: Vec<i64> = (1..=4).map(|id| tx.open(id)).collect();
    assert_eq!(loads, after, "no second assignment");

    // The same key from another credential is another key.
    let other = IdempotencyKey::new("source-key:9", "retry-1", "body-a").expect("valid key");
    let third = pollster::block_on(register_contact_once(&mut tx, &contact, &other, &mut rng))
        .expect("another credential");
    assert!(!third.replayed);
    assert_eq!(tx.contacts.len(), 2);
}

#[test]
fn a_key_reused_with_another_request_is_refused() {
    let mut tx = FakeTx::new(team(), Race::Never);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let contact = new_contact(SourceRef::Id(SOURCE), "lead-1");
    let key = IdempotencyKey::new("admin", "k", "body-a").expect("valid key");
    pollster::block_on(register_contact_once(&mut tx, &contact, &key, &mut rng)).expect("first");
    let changed = IdempotencyKey::new("admin", "k", "body-b").expect("valid key");
    let err = pollster::block_on(register_contact_once(&mut tx, &contact, &changed, &mut rng))
        .expect_err("reused key");
    assert!(matches!(err, StoreError::IdempotencyKeyReused), "{err:?}");
    assert_eq!(tx.contacts.len(), 1);
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
