//! An in-memory [`RegistrationTx`]: one source, its operators, and the leads, contacts and
//! idempotency keys registered so far, in maps. Shared by the use case's tests and the
//! example (`examples/embed.rs` includes this file); its code is also the smallest adapter
//! there is, to read before writing one over real storage.

// Each includer uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::Utc;

use crm_core::{
    Candidate, Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, IdempotencyKey,
    Inserted, KeyClaim, KeyedRegistrationTx, LeadId, OperatorId, OperatorSummary, Payload,
    Prepared, RegistrationTx, SourceCode, SourceId, SourceRef, StoreError,
};

/// An operator as [`MemoryTx`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOperator {
    /// Display name, copied into the contacts assigned to it.
    pub name: String,
    /// Whether it takes contacts.
    pub is_active: bool,
    /// Its load: open contacts assigned to it.
    pub open_contacts: i64,
    /// Its limit of open contacts.
    pub max_active_contacts: i64,
    /// Its weight for the one source.
    pub weight: i64,
}

/// Decides, for each claim of an operator, whether a concurrent registration takes that
/// operator's last places first (see [`MemoryTx::with_rival`]).
type Rival = Box<dyn FnMut(OperatorId) -> bool>;

/// A store of one source kept in memory, which serves as its own unit of work.
///
/// Units of work never overlap (each needs `&mut`), so, as the port allows, an idempotency
/// key is written only with its answer, in [`KeyedRegistrationTx::record_key`]; and every
/// refusal (an unknown source) comes before the first write, so a failed registration
/// leaves nothing behind without a rollback.
pub struct MemoryTx {
    source_id: SourceId,
    source_code: SourceCode,
    operators: BTreeMap<OperatorId, MemoryOperator>,
    /// Leads by external id.
    leads: BTreeMap<String, LeadId>,
    /// The lead of the registration under way, found or created by `prepare`.
    lead: Option<LeadId>,
    contacts: Vec<Contact>,
    /// (credential, key) → (fingerprint, answer).
    keys: BTreeMap<(String, String), (String, Contact)>,
    rival: Option<Rival>,
    /// Operators whose claim was refused, in order.
    lost_claims: Vec<OperatorId>,
}

impl MemoryTx {
    /// An empty store of the source `source_id`, also known by `source_code`.
    #[must_use]
    pub fn new(source_id: SourceId, source_code: SourceCode) -> Self {
        Self {
            source_id,
            source_code,
            operators: BTreeMap::new(),
            leads: BTreeMap::new(),
            lead: None,
            contacts: Vec::new(),
            keys: BTreeMap::new(),
            rival: None,
            lost_claims: Vec::new(),
        }
    }

    /// Adds (or replaces) an operator of the source.
    #[must_use]
    pub fn with_operator(mut self, id: OperatorId, operator: MemoryOperator) -> Self {
        self.operators.insert(id, operator);
        self
    }

    /// Simulates another replica registering at the same time: before each claim,
    /// `rival(operator)` says whether it took that operator's last free places between the
    /// read of the candidates and the claim, so that the claim is lost.
    #[must_use]
    pub fn with_rival(mut self, rival: impl FnMut(OperatorId) -> bool + 'static) -> Self {
        self.rival = Some(Box::new(rival));
        self
    }

    /// The contacts stored so far, in the order they were stored.
    #[must_use]
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }

    /// How many leads are stored.
    #[must_use]
    pub fn lead_count(&self) -> usize {
        self.leads.len()
    }

    /// One operator as it is now.
    #[must_use]
    pub fn operator(&self, id: OperatorId) -> Option<&MemoryOperator> {
        self.operators.get(&id)
    }

    /// The operators whose claim found them full, in order.
    #[must_use]
    pub fn lost_claims(&self) -> &[OperatorId] {
        &self.lost_claims
    }

    fn next_id(len: usize) -> i64 {
        i64::try_from(len).map_or(i64::MAX, |n| n.saturating_add(1))
    }
}

impl RegistrationTx for MemoryTx {
    async fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let known = match source {
            SourceRef::Id(id) => *id == self.source_id,
            SourceRef::Code(code) => *code == self.source_code,
        };
        // The port's contract: an unknown source is `NotFound(Source)`, before any write.
        if !known {
            return Err(StoreError::NotFound(Entity::Source));
        }
        let next_lead = LeadId(Self::next_id(self.leads.len()));
        let lead_id = *self
            .leads
            .entry(external_id.as_str().to_owned())
            .or_insert(next_lead);
        self.lead = Some(lead_id);
        let candidates = self
            .operators
            .iter()
            .map(|(&operator_id, op)| Candidate {
                operator_id,
                weight: op.weight,
                is_active: op.is_active,
                open_contacts: op.open_contacts,
                max_active_contacts: op.max_active_contacts,
                rate_limited: false,
            })
            .collect();
        // Every open contact without an operator waits (this store has no drain).
        let ahead = self
            .contacts
            .iter()
            .filter(|c| c.status == ContactStatus::Open && c.operator.is_none())
            .count() as u64;
        Ok(Prepared {
            source_id: self.source_id,
            candidates,
            waiting: ahead > 0,
            ahead,
            rule: crm_core::SourceRule::default(),
            owner: None,
            credit: Vec::new(),
        })
    }

    async fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        _decision: &Decision,
    ) -> Result<Inserted, StoreError> {
        let lead_id = self
            .lead
            .ok_or_else(|| StoreError::Internal("insert before prepare".into()))?;
        let mut summary = None;
        if let Some(id) = operator {
            let lost = self.rival.as_mut().is_some_and(|rival| rival(id));
            let op = self
                .operators
                .get_mut(&id)
                .ok_or_else(|| StoreError::Internal(format!("claim of unknown {id}").into()))?;
            if lost {
                op.open_contacts = op.open_contacts.max(op.max_active_contacts);
            }
            // The claim: raise the counter only while it is below the limit, as the
            // conditional update of a real adapter does.
            if op.open_contacts >= op.max_active_contacts {
                self.lost_claims.push(id);
                return Ok(Inserted::OperatorFull);
            }
            op.open_contacts += 1;
            summary = Some(OperatorSummary {
                id,
                name: op.name.clone(),
                is_active: op.is_active,
            });
        }
        let contact = Contact {
            id: ContactId(Self::next_id(self.contacts.len())),
            lead_id,
            source_id: prepared.source_id,
            operator: summary,
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: Utc::now(),
            closed_at: None,
            waiting_ahead: None,
        };
        self.contacts.push(contact.clone());
        Ok(Inserted::Stored(contact))
    }
}

impl KeyedRegistrationTx for MemoryTx {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        let id = (key.credential().to_owned(), key.key().to_owned());
        Ok(match self.keys.get(&id) {
            None => KeyClaim::Claimed,
            Some((fingerprint, _)) if fingerprint != key.fingerprint() => KeyClaim::Reused,
            Some((_, contact)) => KeyClaim::Replay(contact.clone()),
        })
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        let id = (key.credential().to_owned(), key.key().to_owned());
        self.keys
            .insert(id, (key.fingerprint().to_owned(), contact.clone()));
        Ok(())
    }
}
