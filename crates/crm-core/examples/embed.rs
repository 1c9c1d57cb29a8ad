//! How another Rust service embeds crm-core: implement [`RegistrationTx`] over your own
//! storage (here a few in-memory maps), then call [`register_contact`] with any executor
//! (here `pollster`) and any random generator (here a seeded `ChaCha8Rng`, so every run
//! prints the same assignments).
//!
//! Run with `cargo run -p crm-core --example embed`.

use std::collections::BTreeMap;
use std::error::Error;

use chrono::Utc;
use crm_core::{
    Candidate, Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, IdempotencyKey,
    Inserted, KeyClaim, LeadId, NewContact, OperatorId, OperatorSummary, Payload, Prepared,
    RegistrationTx, SourceCode, SourceId, SourceRef, StoreError, register_contact,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// An operator as our storage keeps it.
struct Operator {
    name: &'static str,
    is_active: bool,
    open_contacts: i64,
    max_active_contacts: i64,
    /// Its weight for our only source.
    weight: i64,
}

/// The whole "database": one source, its operators, the leads and contacts so far.
/// A real adapter would open a transaction per registration; nothing here can fail
/// half-way, so the store itself serves as the unit of work.
struct Memory {
    source_id: SourceId,
    source_code: &'static str,
    operators: BTreeMap<OperatorId, Operator>,
    leads: BTreeMap<String, LeadId>,
    /// The lead of the registration under way, found or created by `prepare`.
    lead: Option<LeadId>,
    contacts: Vec<Contact>,
    /// Idempotency keys and their answers (this example registers without keys).
    keys: BTreeMap<(String, String), (String, Option<Contact>)>,
}

impl RegistrationTx for Memory {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        let id = (key.credential().to_owned(), key.key().to_owned());
        Ok(match self.keys.get(&id) {
            None => {
                self.keys.insert(id, (key.fingerprint().to_owned(), None));
                KeyClaim::Claimed
            }
            Some((fingerprint, _)) if fingerprint != key.fingerprint() => KeyClaim::Reused,
            Some((_, answer)) => answer.clone().map_or(KeyClaim::Claimed, KeyClaim::Replay),
        })
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        let id = (key.credential().to_owned(), key.key().to_owned());
        self.keys
            .insert(id, (key.fingerprint().to_owned(), Some(contact.clone())));
        Ok(())
    }

    async fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let known = match source {
            SourceRef::Id(id) => *id == self.source_id,
            SourceRef::Code(code) => code.as_str() == self.source_code,
        };
        // The port's contract: an unknown source is `NotFound(Source)`.
        if !known {
            return Err(StoreError::NotFound(Entity::Source));
        }
        let next_lead = LeadId(i64::try_from(self.leads.len()).unwrap_or(i64::MAX) + 1);
        let lead_id = *self
            .leads
            .entry(external_id.as_str().to_owned())
            .or_insert(next_lead);
        // The rule needs each operator's weight and current load.
        let candidates = self
            .operators
            .iter()
            .map(|(&operator_id, op)| Candidate {
                operator_id,
                weight: op.weight,
                is_active: op.is_active,
                open_contacts: op.open_contacts,
                max_active_contacts: op.max_active_contacts,
            })
            .collect();
        self.lead = Some(lead_id);
        Ok(Prepared {
            source_id: self.source_id,
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
        let mut summary = None;
        if let Some(id) = operator {
            let op = self
                .operators
                .get_mut(&id)
                .ok_or_else(|| StoreError::Internal(format!("no operator {id}").into()))?;
            // The claim: with concurrent writers this is the conditional update that can
            // lose a race; `register_contact` then retries with the others.
            if op.open_contacts >= op.max_active_contacts {
                return Ok(Inserted::OperatorFull);
            }
            op.open_contacts += 1;
            summary = Some(OperatorSummary {
                id,
                name: op.name.to_owned(),
                is_active: op.is_active,
            });
        }
        let lead_id = self
            .lead
            .ok_or_else(|| StoreError::Internal("insert before prepare".into()))?;
        let contact = Contact {
            id: ContactId(i64::try_from(self.contacts.len()).unwrap_or(i64::MAX) + 1),
            lead_id,
            source_id: prepared.source_id,
            operator: summary,
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: Utc::now(),
            closed_at: None,
        };
        self.contacts.push(contact.clone());
        Ok(Inserted::Stored(contact))
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let operator = |name, is_active, max_active_contacts, weight| Operator {
        name,
        is_active,
        open_contacts: 0,
        max_active_contacts,
        weight,
    };
    let mut store = Memory {
        source_id: SourceId(1),
        source_code: "tg_bot",
        operators: BTreeMap::from([
            (OperatorId(1), operator("Ann", true, 2, 30)),
            (OperatorId(2), operator("Bob", true, 5, 10)),
            (OperatorId(3), operator("Cid", false, 5, 60)),
        ]),
        leads: BTreeMap::new(),
        lead: None,
        contacts: Vec::new(),
        keys: BTreeMap::new(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(42);

    for (n, lead) in ["alice", "bert", "alice", "chloe", "dmitri"]
        .iter()
        .enumerate()
    {
        let new = NewContact {
            external_lead_id: ExternalLeadId::parse(lead)?,
            source: SourceRef::Code(SourceCode::parse("tg_bot")?),
            payload: Payload::from_value(&serde_json::json!({ "message": n }))?,
        };
        let registered = pollster::block_on(register_contact(&mut store, &new, &mut rng))?;
        let to = registered
            .contact
            .operator
            .as_ref()
            .map_or("nobody", |op| op.name.as_str());
        println!(
            "contact {} from {lead} -> {to}",
            registered.contact.id.get()
        );
        // The decision says who was eligible, why the others were not, and the draw.
        println!("  {}", serde_json::to_string(&registered.decision)?);
    }
    Ok(())
}
