//! Model-based test of the store: `proptest-state-machine` generates random sequences of
//! operations — create and update operators, replace a source's weights, register, close,
//! manually assign and unassign contacts — and runs each against the real store (a fresh SQLite
//! file per case; a fresh PostgreSQL database with the `postgres-tests` feature) and a
//! small in-memory reference model.
//!
//! The draw among eligible operators is the store's: the model accepts any operator that
//! is eligible under its own state and then follows the store's choice. After every step
//! the whole observable state is compared with the model: operators and their counters,
//! the operator stats, every contact (lead, source, status, operator), the leads (unique
//! by external id), each lead's contacts, the unassigned backlog and the weights.
//!
//! Bounded for CI: 24 cases of up to 30 steps on SQLite, 8 on PostgreSQL; set
//! `CRM_MODEL_CASES` for a longer soak run.

use std::collections::{BTreeMap, BTreeSet};

use crm_core::{
    Contact, ContactFilter, ContactId, ContactStatus, Entity, ExternalLeadId, LeadFilter, LeadId,
    MaxActiveContacts, Name, NewContact, NewOperator, NewSource, OperatorFilter, OperatorId,
    OperatorPatch, Page, Payload, SourceCode, SourceId, SourceRef, Store, StoreError, Weight,
    WeightEntry, WeightSet,
};
use crm_store::{
    DbStore, StoreConfig,
    testing::{Backend, TestDatabase},
};
use proptest::{prelude::*, test_runner::Config};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

/// External lead ids the registrations draw from: few, so leads repeat. Two differ from
/// `lead-0` only by case or a leading space: ids are kept exactly as sent, so they are
/// different leads.
const LEAD_POOL: [&str; 6] = ["lead-0", "lead-1", "lead-2", "12345", "Lead-0", " lead-0"];

/// Ids no operator or contact of a test database ever gets.
const UNKNOWN_ID_BASE: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------
// Generation: the reference state machine only counts what exists, so a transition can
// name the n-th operator, source or contact. An index past the end names one that does
// not exist, which the store must reject exactly as the model says.
// ---------------------------------------------------------------------------------------

/// What exists, for generating transitions.
#[derive(Debug, Clone)]
struct Counts {
    sources: usize,
    operators: usize,
    contacts: usize,
}

/// One operation on the store. Indices name the n-th created operator, source or contact;
/// an index at or past the count names one that does not exist.
#[derive(Debug, Clone)]
enum Step {
    CreateOperator {
        active: bool,
        limit: i64,
    },
    UpdateOperator {
        operator: usize,
        active: Option<bool>,
        limit: Option<i64>,
    },
    ReplaceWeights {
        source: usize,
        /// Distinct operators, in a random order, with weights.
        weights: Vec<(usize, i64)>,
    },
    Register {
        lead: usize,
        source: usize,
        by_code: bool,
    },
    Close {
        contact: usize,
    },
    Assign {
        contact: usize,
        operator: usize,
    },
    Unassign {
        contact: usize,
    },
}

/// An index below `count` most of the time, sometimes `count` itself (one that does not
/// exist).
fn index(count: usize) -> BoxedStrategy<usize> {
    if count == 0 {
        Just(0).boxed()
    } else {
        prop_oneof![9 => 0..count, 1 => Just(count)].boxed()
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Counts;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Counts> {
        (1..=3usize)
            .prop_map(|sources| Counts {
                sources,
                operators: 0,
                contacts: 0,
            })
            .boxed()
    }

    fn transitions(state: &Counts) -> BoxedStrategy<Step> {
        let create = (any::<bool>(), 0..=4i64)
            .prop_map(|(active, limit)| Step::CreateOperator { active, limit });
        let update = (
            index(state.operators),
            proptest::option::of(any::<bool>()),
            proptest::option::of(0..=4i64),
        )
            .prop_map(|(operator, active, limit)| Step::UpdateOperator {
                operator,
                active,
                limit,
            });
        let weights = (
            index(state.sources),
            proptest::collection::btree_map(index(state.operators), 1..=3i64, 0..=3)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>())
                .prop_shuffle(),
        )
            .prop_map(|(source, weights)| Step::ReplaceWeights { source, weights });
        let register = (0..LEAD_POOL.len(), index(state.sources), any::<bool>()).prop_map(
            |(lead, source, by_code)| Step::Register {
                lead,
                source,
                by_code,
            },
        );
        let close = index(state.contacts).prop_map(|contact| Step::Close { contact });
        let assign = (index(state.contacts), index(state.operators))
            .prop_map(|(contact, operator)| Step::Assign { contact, operator });
        let unassign = index(state.contacts).prop_map(|contact| Step::Unassign { contact });
        prop_oneof![
            2 => create,
            2 => update,
            2 => weights,
            5 => register,
            2 => close,
            2 => assign,
            1 => unassign,
        ]
        .boxed()
    }

    fn apply(mut state: Counts, step: &Step) -> Counts {
        match step {
            Step::CreateOperator { .. } => state.operators += 1,
            Step::Register { source, .. } if *source < state.sources => state.contacts += 1,
            _ => {}
        }
        state
    }
}

// ---------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ModelOperator {
    active: bool,
    limit: i64,
    /// Open contacts assigned to it.
    load: i64,
    /// The highest load it may have: its limit, or the load it had when its limit was
    /// lowered below it (lowering takes nothing away), shrinking as contacts are closed or
    /// moved away. Nothing may push the load above it.
    ceiling: i64,
}

impl ModelOperator {
    fn takes_more(&self) -> bool {
        self.active && self.load < self.limit
    }

    fn released(&mut self) {
        self.load -= 1;
        self.ceiling = self.limit.max(self.load.min(self.ceiling));
    }
}

#[derive(Debug, Clone)]
struct ModelContact {
    external_id: &'static str,
    source: SourceId,
    operator: Option<OperatorId>,
    open: bool,
}

#[derive(Debug, Default)]
struct Model {
    operators: BTreeMap<OperatorId, ModelOperator>,
    /// Each source's weights, by operator id.
    weights: BTreeMap<SourceId, BTreeMap<OperatorId, i64>>,
    leads: BTreeMap<&'static str, LeadId>,
    contacts: BTreeMap<ContactId, ModelContact>,
}

// ---------------------------------------------------------------------------------------
// The system under test: the store, its database, a runtime, and the model that follows it.
// ---------------------------------------------------------------------------------------

struct Sut {
    /// `None` only once torn down.
    store: Option<DbStore>,
    db: Option<TestDatabase>,
    rt: tokio::runtime::Runtime,
    sources: Vec<(SourceId, String)>,
    operators: Vec<OperatorId>,
    contacts: Vec<ContactId>,
    model: Model,
    /// Where the store answered, for failure messages.
    step: usize,
}

impl Drop for Sut {
    /// Also runs when a step panics: the pool and the database are dropped inside the
    /// runtime they were made in.
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        drop(self.store.take());
        drop(self.db.take());
    }
}

impl Sut {
    fn new(backend: Backend, sources: usize) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (db, store) = rt.block_on(async {
            let db = TestDatabase::create(backend).await;
            let config = StoreConfig {
                database_url: db.database_url(),
                seed: Some(7),
                ..StoreConfig::default()
            };
            let store = crm_store::connect(&config).await.expect("open store");
            (db, store)
        });
        let mut sut = Self {
            store: Some(store),
            db: Some(db),
            rt,
            sources: Vec::new(),
            operators: Vec::new(),
            contacts: Vec::new(),
            model: Model::default(),
            step: 0,
        };
        for n in 0..sources {
            let code = format!("src-{n}");
            let source = sut
                .rt
                .block_on(sut.store().create_source(NewSource {
                    name: Name::parse(&format!("Source {n}")).expect("name"),
                    code: SourceCode::parse(&code).expect("code"),
                    rule: crm_core::SourceRule::default(),
                }))
                .expect("create source");
            assert!(source.operators.is_empty());
            sut.model.weights.insert(source.id, BTreeMap::new());
            sut.sources.push((source.id, code));
        }
        sut
    }

    fn store(&self) -> &DbStore {
        self.store.as_ref().expect("store is open")
    }

    fn operator_id(&self, index: usize) -> OperatorId {
        self.operators
            .get(index)
            .copied()
            .unwrap_or(OperatorId(UNKNOWN_ID_BASE + index as i64))
    }

    fn contact_id(&self, index: usize) -> ContactId {
        self.contacts
            .get(index)
            .copied()
            .unwrap_or(ContactId(UNKNOWN_ID_BASE + index as i64))
    }

    fn source_ref(&self, index: usize, by_code: bool) -> (Option<SourceId>, SourceRef) {
        match (self.sources.get(index), by_code) {
            (Some((id, _)), false) => (Some(*id), SourceRef::Id(*id)),
            (Some((id, code)), true) => (
                Some(*id),
                SourceRef::Code(SourceCode::parse(code).expect("code")),
            ),
            (None, false) => (None, SourceRef::Id(SourceId(UNKNOWN_ID_BASE))),
            (None, true) => (
                None,
                SourceRef::Code(SourceCode::parse("no-such-source").expect("code")),
            ),
        }
    }

    fn run(&mut self, step: Step) {
        self.step += 1;
        match step {
            Step::CreateOperator { active, limit } => self.create_operator(active, limit),
            Step::UpdateOperator {
                operator,
                active,
                limit,
            } => self.update_operator(self.operator_id(operator), active, limit),
            Step::ReplaceWeights { source, weights } => self.replace_weights(source, &weights),
            Step::Register {
                lead,
                source,
                by_code,
            } => self.register(LEAD_POOL[lead], source, by_code),
            Step::Close { contact } => self.close(self.contact_id(contact)),
            Step::Assign { contact, operator } => {
                self.assign(self.contact_id(contact), self.operator_id(operator));
            }
            Step::Unassign { contact } => {
                let taken = self.unassign(self.contact_id(contact));
                self.follow_drains(taken);
                if taken.is_some() {
                    // The drain after an unassign passes the operator over for that contact,
                    // which may leave it (and its source) waiting with only that operator
                    // eligible; the sweep treats it like any waiting contact.
                    self.rt.block_on(self.store().drain_queue()).expect("sweep");
                    self.follow_drains(None);
                }
                return;
            }
        }
        self.follow_drains(None);
    }

    /// The waiting contacts in the model: open, without an operator, in id (queue) order.
    fn waiting(&self, source: SourceId) -> Vec<ContactId> {
        self.model
            .contacts
            .iter()
            .filter(|(_, c)| c.open && c.operator.is_none() && c.source == source)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The operators that may take a contact of `source` now.
    fn eligible(&self, source: SourceId) -> BTreeSet<OperatorId> {
        self.model.weights[&source]
            .keys()
            .copied()
            .filter(|op| self.model.operators[op].takes_more())
            .collect()
    }

    /// Follows the drain the step ran in the store: the waiting contacts it assigned, in
    /// the order it served them (id order), each the oldest waiting one of its source and
    /// to an operator eligible then; afterwards no waiting contact has an eligible operator
    /// (the queue is work-conserving). `avoided`: a contact just unassigned and its former
    /// operator, which the drain passes over for it, so that contact may wait at the head
    /// of its source while only that operator is eligible.
    fn follow_drains(&mut self, avoided: Option<(ContactId, OperatorId)>) {
        let at = self.step;
        let stored = self.rt.block_on(all_contacts(self.store()));
        let drained: Vec<(ContactId, OperatorId)> = stored
            .iter()
            .filter(|c| {
                self.model
                    .contacts
                    .get(&c.id)
                    .is_some_and(|m| m.open && m.operator.is_none())
            })
            .filter_map(|c| Some((c.id, c.operator.as_ref()?.id)))
            .collect();
        for (id, operator) in drained {
            let source = self.model.contacts[&id].source;
            assert_eq!(
                self.waiting(source).first(),
                Some(&id),
                "step {at}: contact {id} drained before an older one of its source"
            );
            let eligible = self.eligible(source);
            assert!(
                eligible.contains(&operator),
                "step {at}: contact {id} drained to {operator}, not one of {eligible:?}"
            );
            assert_ne!(
                avoided,
                Some((id, operator)),
                "step {at}: contact {id} drained back to the operator it was taken from"
            );
            self.model
                .contacts
                .get_mut(&id)
                .expect("contact exists")
                .operator = Some(operator);
            self.model
                .operators
                .get_mut(&operator)
                .expect("operator exists")
                .load += 1;
        }
        let sources: BTreeSet<SourceId> = self.model.contacts.values().map(|c| c.source).collect();
        for source in sources {
            let waiting = self.waiting(source);
            let eligible = self.eligible(source);
            let passed_over = avoided.is_some_and(|(contact, from)| {
                waiting.first() == Some(&contact) && eligible.iter().all(|&op| op == from)
            });
            assert!(
                waiting.is_empty() || eligible.is_empty() || passed_over,
                "step {at}: {waiting:?} wait on source {source} although {eligible:?} may take them"
            );
        }
    }

    fn create_operator(&mut self, active: bool, limit: i64) {
        let n = self.operators.len();
        let created = self
            .rt
            .block_on(self.store().create_operator(NewOperator {
                name: Name::parse(&format!("Operator {n}")).expect("name"),
                is_active: active,
                max_active_contacts: MaxActiveContacts::new(limit).expect("limit"),
                max_assignments_per_minute: None,
            }))
            .expect("create operator");
        assert_eq!(
            (
                created.is_active,
                created.max_active_contacts.get(),
                created.open_contacts
            ),
            (active, limit, 0),
            "created operator {created:?}"
        );
        assert!(
            !self.model.operators.contains_key(&created.id),
            "operator id {} reused",
            created.id
        );
        self.model.operators.insert(
            created.id,
            ModelOperator {
                active,
                limit,
                load: 0,
                ceiling: limit,
            },
        );
        self.operators.push(created.id);
    }

    fn update_operator(&mut self, id: OperatorId, active: Option<bool>, limit: Option<i64>) {
        let patch = OperatorPatch {
            name: None,
            is_active: active,
            max_active_contacts: limit.map(|l| MaxActiveContacts::new(l).expect("limit")),
            max_assignments_per_minute: None,
        };
        let result = self.rt.block_on(self.store().update_operator(id, patch));
        let Some(model) = self.model.operators.get_mut(&id) else {
            assert!(
                matches!(result, Err(StoreError::NotFound(Entity::Operator))),
                "update of unknown operator {id}: {result:?}"
            );
            return;
        };
        if let Some(active) = active {
            model.active = active;
        }
        if let Some(limit) = limit {
            model.limit = limit;
            // Lowering the limit keeps what the operator has; raising it lets it take more.
            model.ceiling = limit.max(model.load);
        }
        let updated = result.expect("update operator");
        // The counter may have grown since: the update drains the queue (followed after
        // the step).
        assert_eq!(
            (updated.is_active, updated.max_active_contacts.get()),
            (model.active, model.limit),
            "updated operator {id}"
        );
        assert!(updated.open_contacts >= model.load, "updated operator {id}");
    }

    fn replace_weights(&mut self, source: usize, weights: &[(usize, i64)]) {
        let entries: Vec<WeightEntry> = weights
            .iter()
            .map(|&(operator, weight)| WeightEntry {
                operator_id: self.operator_id(operator),
                weight: Weight::new(weight).expect("weight"),
            })
            .collect();
        let set = WeightSet::new(entries.clone()).expect("distinct operators");
        let (source_id, _) = self.source_ref(source, false);
        let id = source_id.unwrap_or(SourceId(UNKNOWN_ID_BASE));
        let result = self.rt.block_on(self.store().replace_weights(id, set));
        if source_id.is_none() {
            assert!(
                matches!(result, Err(StoreError::NotFound(Entity::Source))),
                "weights of unknown source: {result:?}"
            );
            return;
        }
        let unknown = entries
            .iter()
            .enumerate()
            .find(|(_, e)| !self.model.operators.contains_key(&e.operator_id));
        if let Some((index, entry)) = unknown {
            match result {
                Err(StoreError::UnknownOperator {
                    index: Some(i),
                    operator_id,
                }) if i == index && operator_id == entry.operator_id => {}
                other => panic!(
                    "weights naming unknown operator {} at {index}: {other:?}",
                    entry.operator_id
                ),
            }
            // Nothing changed: the invariants compare the stored weights with the model.
            return;
        }
        let stored = result.expect("replace weights");
        let expected: BTreeMap<OperatorId, i64> = entries
            .iter()
            .map(|e| (e.operator_id, e.weight.get()))
            .collect();
        let got: Vec<(OperatorId, i64)> = stored
            .operators
            .iter()
            .map(|so| (so.operator.id, so.weight.get()))
            .collect();
        assert_eq!(
            got,
            expected.clone().into_iter().collect::<Vec<_>>(),
            "weights as returned, by operator id"
        );
        self.model.weights.insert(id, expected);
    }

    fn register(&mut self, external_id: &'static str, source: usize, by_code: bool) {
        let (source_id, source_ref) = self.source_ref(source, by_code);
        let new = NewContact {
            external_lead_id: ExternalLeadId::parse(external_id).expect("external id"),
            source: source_ref,
            payload: Payload::from_value(&serde_json::json!({"step": self.step})).expect("payload"),
        };
        let result = self.rt.block_on(self.store().register_contact(new));
        let Some(source_id) = source_id else {
            // No lead may be left behind: the invariants compare the leads with the model.
            assert!(
                matches!(result, Err(StoreError::NotFound(Entity::Source))),
                "registration to an unknown source: {result:?}"
            );
            return;
        };
        let contact = result.expect("register contact");
        assert_eq!(contact.source_id, source_id, "source of {contact:?}");
        assert_eq!(contact.status, ContactStatus::Open);
        assert!(contact.closed_at.is_none());
        match self.model.leads.get(external_id) {
            Some(&lead) => assert_eq!(contact.lead_id, lead, "lead {external_id:?} reused"),
            None => {
                assert!(
                    !self.model.leads.values().any(|&l| l == contact.lead_id),
                    "new lead {external_id:?} got the id of another lead"
                );
                self.model.leads.insert(external_id, contact.lead_id);
            }
        }
        let eligible = self.eligible(source_id);
        let chosen = contact.operator.as_ref().map(|o| o.id);
        let queued_behind = self.waiting(source_id);
        match chosen {
            // No overtaking: behind waiting contacts it waits too (and a drain follows).
            None if !queued_behind.is_empty() => {}
            Some(_) if !queued_behind.is_empty() => panic!(
                "contact {} was assigned ahead of {queued_behind:?}, which wait",
                contact.id
            ),
            None => assert!(
                eligible.is_empty(),
                "contact {} left unassigned although {eligible:?} were eligible",
                contact.id
            ),
            Some(op) => {
                assert!(
                    eligible.contains(&op),
                    "contact {} went to operator {op}, not one of the eligible {eligible:?} \
                     (model: {:?})",
                    contact.id,
                    self.model.operators.get(&op)
                );
                self.model
                    .operators
                    .get_mut(&op)
                    .expect("eligible operators exist")
                    .load += 1;
            }
        }
        assert!(
            !self.model.contacts.contains_key(&contact.id),
            "contact id {} reused",
            contact.id
        );
        self.model.contacts.insert(
            contact.id,
            ModelContact {
                external_id,
                source: source_id,
                operator: chosen,
                open: true,
            },
        );
        self.contacts.push(contact.id);
    }

    fn close(&mut self, id: ContactId) {
        let result = self.rt.block_on(self.store().close_contact(id));
        let Some(model) = self.model.contacts.get_mut(&id) else {
            assert!(
                matches!(result, Err(StoreError::NotFound(Entity::Contact))),
                "close of unknown contact {id}: {result:?}"
            );
            return;
        };
        let closed = result.expect("close contact");
        assert_eq!(closed.status, ContactStatus::Closed);
        assert!(closed.closed_at.is_some());
        assert_eq!(
            closed.operator.as_ref().map(|o| o.id),
            model.operator,
            "closing keeps the operator"
        );
        if model.open {
            model.open = false;
            if let Some(op) = model.operator {
                self.model
                    .operators
                    .get_mut(&op)
                    .expect("operator exists")
                    .released();
            }
        }
    }

    /// The manual assignment rule, in the order the store checks it: the contact exists,
    /// is open, the operator exists; the same operator again changes nothing; otherwise
    /// the operator must be active and below its limit.
    fn assign(&mut self, id: ContactId, operator_id: OperatorId) {
        let result = self
            .rt
            .block_on(self.store().assign_contact(id, operator_id));
        let expected_error = match self.model.contacts.get(&id) {
            None => Some("NotFound(Contact)"),
            Some(c) if !c.open => Some("ContactClosed"),
            Some(c) => match self.model.operators.get(&operator_id) {
                None => Some("UnknownOperator"),
                Some(_) if c.operator == Some(operator_id) => None,
                Some(op) if !op.active => Some("OperatorInactive"),
                Some(op) if op.load >= op.limit => Some("OperatorAtCapacity"),
                Some(_) => None,
            },
        };
        if let Some(expected) = expected_error {
            let ok = match &result {
                Err(StoreError::NotFound(Entity::Contact)) => expected == "NotFound(Contact)",
                Err(StoreError::ContactClosed) => expected == "ContactClosed",
                Err(StoreError::UnknownOperator {
                    index: None,
                    operator_id: o,
                }) => expected == "UnknownOperator" && *o == operator_id,
                Err(StoreError::OperatorInactive) => expected == "OperatorInactive",
                Err(StoreError::OperatorAtCapacity) => expected == "OperatorAtCapacity",
                _ => false,
            };
            assert!(
                ok,
                "assign contact {id} to operator {operator_id}: expected {expected}, got {result:?}"
            );
            return;
        }
        let assigned = result.expect("assign contact");
        assert_eq!(assigned.operator.as_ref().map(|o| o.id), Some(operator_id));
        assert_eq!(assigned.status, ContactStatus::Open);
        let contact = self.model.contacts.get_mut(&id).expect("known contact");
        let previous = contact.operator.replace(operator_id);
        if previous != Some(operator_id) {
            if let Some(previous) = previous {
                self.model
                    .operators
                    .get_mut(&previous)
                    .expect("operator exists")
                    .released();
            }
            self.model
                .operators
                .get_mut(&operator_id)
                .expect("operator exists")
                .load += 1;
        }
    }

    /// `unassign`: unknown contacts are not found, closed ones refused, waiting ones left
    /// as they are; an assigned one waits again and its operator is released. Returns the
    /// contact and the operator it was taken from.
    fn unassign(&mut self, id: ContactId) -> Option<(ContactId, OperatorId)> {
        let result = self.rt.block_on(self.store().unassign_contact(id));
        let Some(model) = self.model.contacts.get_mut(&id) else {
            assert!(
                matches!(result, Err(StoreError::NotFound(Entity::Contact))),
                "unassign of unknown contact {id}: {result:?}"
            );
            return None;
        };
        if !model.open {
            assert!(
                matches!(result, Err(StoreError::ContactClosed)),
                "unassign of closed contact {id}: {result:?}"
            );
            return None;
        }
        let answered = result.expect("unassign contact");
        assert_eq!(answered.status, ContactStatus::Open);
        let from = model.operator.take()?;
        self.model
            .operators
            .get_mut(&from)
            .expect("operator exists")
            .released();
        Some((id, from))
    }

    /// Compares everything the store shows with the model.
    fn check(&self) {
        let at = self.step;
        let store = self.store();
        self.rt.block_on(async {
            // Operators: activity, limit, counter; and no load above its ceiling.
            let operators = store
                .list_operators(OperatorFilter::default())
                .await
                .expect("list operators");
            let ids: Vec<OperatorId> = operators.iter().map(|o| o.id).collect();
            let model_ids: Vec<OperatorId> = self.model.operators.keys().copied().collect();
            assert_eq!(ids, model_ids, "step {at}: operators");
            for op in &operators {
                let m = &self.model.operators[&op.id];
                assert_eq!(
                    (op.is_active, op.max_active_contacts.get(), op.open_contacts),
                    (m.active, m.limit, m.load),
                    "step {at}: operator {} (active, limit, counter)",
                    op.id
                );
                assert!(
                    m.load <= m.ceiling && m.ceiling <= m.limit.max(m.load),
                    "step {at}: operator {} holds {} with limit {} (ceiling {})",
                    op.id,
                    m.load,
                    m.limit,
                    m.ceiling
                );
            }

            // Contacts: every registered one, as the model has it.
            let contacts = all_contacts(store).await;
            let contact_ids: Vec<ContactId> = contacts.iter().map(|c| c.id).collect();
            let model_contacts: Vec<ContactId> = self.model.contacts.keys().copied().collect();
            assert_eq!(contact_ids, model_contacts, "step {at}: contacts");
            for c in &contacts {
                let m = &self.model.contacts[&c.id];
                let expected_status = if m.open {
                    ContactStatus::Open
                } else {
                    ContactStatus::Closed
                };
                assert_eq!(
                    (
                        c.lead_id,
                        c.source_id,
                        c.status,
                        c.operator.as_ref().map(|o| o.id)
                    ),
                    (
                        self.model.leads[m.external_id],
                        m.source,
                        expected_status,
                        m.operator
                    ),
                    "step {at}: contact {} (lead, source, status, operator)",
                    c.id
                );
                assert_eq!(c.closed_at.is_some(), !m.open, "step {at}: closed_at");
            }

            // The counters equal the rows, and the stats say the same.
            let stats = store.operator_stats().await.expect("stats");
            assert_eq!(stats.len(), operators.len(), "step {at}: stats rows");
            for s in &stats {
                let open_rows = contacts
                    .iter()
                    .filter(|c| {
                        c.status == ContactStatus::Open
                            && c.operator.as_ref().map(|o| o.id) == Some(s.operator_id)
                    })
                    .count() as i64;
                let total_rows = contacts
                    .iter()
                    .filter(|c| c.operator.as_ref().map(|o| o.id) == Some(s.operator_id))
                    .count() as i64;
                let m = &self.model.operators[&s.operator_id];
                assert_eq!(
                    (
                        s.open_contacts,
                        s.total_contacts,
                        s.max_active_contacts.get()
                    ),
                    (open_rows, total_rows, m.limit),
                    "step {at}: stats of operator {} (open, total, limit) vs rows",
                    s.operator_id
                );
            }
            // What a metrics scrape reads: the same counters, from the operators alone.
            let loads: Vec<(OperatorId, i64, i64)> = store
                .operator_loads()
                .await
                .expect("loads")
                .into_iter()
                .map(|l| (l.operator_id, l.open_contacts, l.max_active_contacts.get()))
                .collect();
            let from_stats: Vec<(OperatorId, i64, i64)> = stats
                .iter()
                .map(|s| (s.operator_id, s.open_contacts, s.max_active_contacts.get()))
                .collect();
            assert_eq!(loads, from_stats, "step {at}: operator loads vs stats");

            // Leads: one per external id, exactly the ones registered.
            let leads = store
                .list_leads(LeadFilter {
                    external_id: None,
                    page: Page {
                        after: None,
                        limit: Page::MAX_LIMIT,
                    },
                })
                .await
                .expect("list leads");
            let got: BTreeMap<String, LeadId> = leads
                .iter()
                .map(|l| (l.external_id.clone(), l.id))
                .collect();
            assert_eq!(got.len(), leads.len(), "step {at}: a repeated external id");
            let expected: BTreeMap<String, LeadId> = self
                .model
                .leads
                .iter()
                .map(|(&e, &id)| (e.to_owned(), id))
                .collect();
            assert_eq!(got, expected, "step {at}: leads");
            for (&external_id, &lead_id) in &self.model.leads {
                let lead = store.get_lead(lead_id).await.expect("get lead");
                let mut got: Vec<ContactId> = lead.contacts.iter().map(|c| c.id).collect();
                got.sort_unstable();
                let expected: Vec<ContactId> = self
                    .model
                    .contacts
                    .iter()
                    .filter(|(_, c)| c.external_id == external_id)
                    .map(|(&id, _)| id)
                    .collect();
                assert_eq!(got, expected, "step {at}: contacts of lead {external_id:?}");
            }

            // The backlog: open, unassigned contacts per source.
            let mut backlog: BTreeMap<SourceId, i64> = BTreeMap::new();
            for c in self.model.contacts.values() {
                if c.open && c.operator.is_none() {
                    *backlog.entry(c.source).or_default() += 1;
                }
            }
            let got: BTreeMap<SourceId, i64> = store
                .queue(None)
                .await
                .expect("queue")
                .into_iter()
                .map(|q| (q.source_id, q.waiting))
                .collect();
            assert_eq!(got, backlog, "step {at}: unassigned backlog");

            // Each contact's history explains where it is: it starts with its registration
            // and its last entry names its operator now (none after an unassign).
            for contact in &contacts {
                let history = store
                    .contact_decisions(contact.id)
                    .await
                    .expect("decision history");
                let first = history.first().map(|e| e.path);
                assert!(
                    matches!(
                        first,
                        Some(crm_core::DecisionPath::Registered | crm_core::DecisionPath::Queued)
                    ),
                    "step {at}: contact {} history starts with {first:?}",
                    contact.id
                );
                let operator_after = history.last().and_then(|e| match e.path {
                    crm_core::DecisionPath::Unassigned => None,
                    _ => e.operator_id,
                });
                assert_eq!(
                    operator_after,
                    contact.operator.as_ref().map(|o| o.id),
                    "step {at}: contact {} history {history:?}",
                    contact.id
                );
                let seqs: Vec<i64> = history.iter().map(|e| e.seq).collect();
                let expected: Vec<i64> = (1..=history.len() as i64).collect();
                assert_eq!(seqs, expected, "step {at}: contact {}", contact.id);
            }

            // Weights, as stored.
            for source in store.list_sources().await.expect("list sources") {
                let got: BTreeMap<OperatorId, i64> = source
                    .operators
                    .iter()
                    .map(|so| (so.operator.id, so.weight.get()))
                    .collect();
                assert_eq!(
                    got, self.model.weights[&source.id],
                    "step {at}: weights of source {}",
                    source.id
                );
            }
        });
    }

    fn teardown(mut self) {
        let store = self.store.take().expect("store is open");
        let db = self.db.take().expect("database exists");
        self.rt.block_on(async {
            store.shutdown().await;
            drop(store);
            db.drop_database().await;
        });
        let _guard = self.rt.enter();
        drop(db);
    }
}

async fn all_contacts(store: &DbStore) -> Vec<Contact> {
    store
        .list_contacts(ContactFilter {
            status: None,
            operator_id: None,
            source_id: None,
            lead_id: None,
            unassigned: false,
            page: Page {
                after: None,
                limit: Page::MAX_LIMIT,
            },
        })
        .await
        .expect("list contacts")
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

/// Runs the model against a store on SQLite, or on PostgreSQL when `POSTGRES`.
struct StoreMachine<const POSTGRES: bool>;

impl<const POSTGRES: bool> StateMachineTest for StoreMachine<POSTGRES> {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(counts: &Counts) -> Sut {
        let backend = if POSTGRES {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        Sut::new(backend, counts.sources)
    }

    fn apply(mut sut: Sut, _: &Counts, step: Step) -> Sut {
        sut.run(step);
        sut
    }

    fn check_invariants(sut: &Sut, _: &Counts) {
        sut.check();
    }

    fn teardown(sut: Sut, _: Counts) {
        sut.teardown();
    }
}

type OnSqlite = StoreMachine<false>;
#[cfg(feature = "postgres-tests")]
type OnPostgres = StoreMachine<true>;

/// `cases` unless `CRM_MODEL_CASES` says otherwise; failures are not persisted to files
/// (the shrunk sequence of steps is printed instead).
fn config(cases: u32) -> Config {
    let cases = std::env::var("CRM_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

prop_state_machine! {
    #![proptest_config(config(24))]

    /// SQLite: 24 random sequences of up to 30 steps, each on a fresh file.
    #[test]
    fn store_follows_the_model_on_sqlite(sequential 1..30 => OnSqlite);
}

#[cfg(feature = "postgres-tests")]
prop_state_machine! {
    #![proptest_config(config(8))]

    /// PostgreSQL: 8 random sequences of up to 30 steps, each on a fresh database.
    #[test]
    fn store_follows_the_model_on_postgres(sequential 1..30 => OnPostgres);
}
