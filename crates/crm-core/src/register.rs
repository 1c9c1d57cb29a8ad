//! The registration use case, written once against [`RegistrationTx`].

use rand::Rng;

use crate::{
    Contact, Decision, IdempotencyKey, Inserted, KeyClaim, KeyedRegistrationTx, NewContact,
    Prepared, RegistrationTx, SourceState, StoreError, decide, queued,
};

/// A stored contact and the decision that placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The contact as stored.
    pub contact: Contact,
    /// Why it went where it went.
    pub decision: Decision,
}

/// What a registration with an idempotency key answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The contact, as first answered when `replayed`.
    pub contact: Contact,
    /// The key had been used with the same request: nothing new was stored.
    pub replayed: bool,
}

/// Registers a contact at most once per idempotency key, inside `tx`: the first request
/// with a key registers and records its answer in the same unit of work; a repeat with
/// the same request gets that answer back; a different request with the key is refused.
///
/// # Errors
/// [`StoreError::IdempotencyKeyReused`], or whatever `tx` returns.
pub async fn register_contact_once<T, R>(
    tx: &mut T,
    new: &NewContact,
    key: &IdempotencyKey,
    rng: &mut R,
) -> Result<Registration, StoreError>
where
    T: KeyedRegistrationTx + ?Sized,
    R: Rng + ?Sized,
{
    match tx.claim_key(key).await? {
        KeyClaim::Claimed => {}
        KeyClaim::Replay(contact) => {
            return Ok(Registration {
                contact,
                replayed: true,
            });
        }
        KeyClaim::Reused => return Err(StoreError::IdempotencyKeyReused),
    }
    let registered = register_contact(tx, new, rng).await?;
    tx.record_key(key, &registered.contact).await?;
    Ok(Registration {
        contact: registered.contact,
        replayed: false,
    })
}

/// Registers a contact inside the unit of work `tx`: resolve the source and read the
/// candidates, choose, then claim the operator and insert the contact (the adapter finds or
/// creates the lead in one of the two steps).
///
/// When the source has contacts waiting, the new one queues behind them: it is stored
/// without an operator and with a [`queued`] decision, and no operator is claimed (the
/// store then drains the queue, oldest first).
///
/// When the chosen operator filled up between the read and the claim (another replica won
/// the race), it is treated as at capacity and the rule runs again over the rest, so the
/// loop ends after at most one retry per candidate, at worst storing the contact unassigned.
///
/// # Errors
/// Whatever `tx` returns; the caller then rolls the unit of work back.
pub async fn register_contact<T, R>(
    tx: &mut T,
    new: &NewContact,
    rng: &mut R,
) -> Result<Registered, StoreError>
where
    T: RegistrationTx + ?Sized,
    R: Rng + ?Sized,
{
    let prepared = tx.prepare(&new.source, &new.external_lead_id).await?;
    let mut candidates = prepared.candidates.clone();
    loop {
        let mut decision = if prepared.waiting {
            Decision {
                strategy: prepared.rule.strategy,
                ..queued(&candidates)
            }
        } else {
            let state = SourceState {
                rule: prepared.rule,
                owner: prepared.owner,
                credit: &prepared.credit,
            };
            decide(&candidates, &state, None, rng)
        };
        if decision.chosen.is_none() {
            decision.ahead = Some(prepared.ahead.min(Prepared::MAX_AHEAD));
        }
        match tx
            .insert_contact(&prepared, decision.chosen, &new.payload, &decision)
            .await?
        {
            Inserted::Stored(mut contact) => {
                contact.waiting_ahead = decision.ahead;
                return Ok(Registered { contact, decision });
            }
            Inserted::OperatorFull => {
                let Some(lost) = decision.chosen else {
                    return Err(StoreError::Internal(
                        "an unassigned insert reported a lost claim".into(),
                    ));
                };
                for candidate in &mut candidates {
                    if candidate.operator_id == lost {
                        candidate.open_contacts =
                            candidate.open_contacts.max(candidate.max_active_contacts);
                    }
                }
            }
        }
    }
}
