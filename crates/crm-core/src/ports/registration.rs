//! The ports of one registration's unit of work: what the use case
//! ([`register_contact`](crate::register_contact)) asks of an adapter between its
//! transaction's start and its commit.

use std::future::Future;

use crate::{
    Candidate, Contact, Decision, ExternalLeadId, IdempotencyKey, OperatorId, Payload, SourceId,
    SourceRef, SourceRule, StoreError,
};

/// What a registration learned in its first round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The resolved source.
    pub source_id: SourceId,
    /// The operators with a weight for the source, with their loads, by operator id.
    pub candidates: Vec<Candidate>,
    /// The source has contacts waiting: a new one queues behind them and claims nobody
    /// (no overtaking, see [`crate::DrainOrder`]).
    pub waiting: bool,
    /// How many, counted up to [`Prepared::MAX_AHEAD`] (which then means at least that
    /// many): what a contact stored waiting is told was ahead of it (0 when none wait).
    pub ahead: u64,
    /// The source's strategy and stickiness.
    pub rule: SourceRule,
    /// For a sticky source: the operator of the lead's latest contact from it, if any.
    pub owner: Option<OperatorId>,
    /// For a smooth source: the candidates' credits, in their order (held under the
    /// source's lock until the unit of work ends, so two registrations never pick from the
    /// same state). Empty otherwise.
    pub credit: Vec<i64>,
}

impl Prepared {
    /// The most waiting contacts a registration counts ahead of it: counting further would
    /// cost every registration into a long queue a walk of it (on PostgreSQL, inside its
    /// first statement), for a figure that says no more to a client than "very many".
    pub const MAX_AHEAD: u64 = 100;
}

/// Outcome of [`RegistrationTx::insert_contact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The contact is stored (and its operator's counter raised, if it has one).
    Stored(Contact),
    /// The chosen operator reached its limit since the candidates were read; nothing
    /// was written.
    OperatorFull,
}

/// Outcome of [`KeyedRegistrationTx::claim_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new (or expired): this registration owns it now.
    Claimed,
    /// The key was used with the same request: here is the contact it answered.
    Replay(Contact),
    /// The key was used with a different request.
    Reused,
}

/// One registration's unit of work. The adapter begins a transaction (or a savepoint)
/// before handing it out and commits it only when [`register_contact`](crate::register_contact)
/// returns `Ok`; otherwise everything it wrote is rolled back. An adapter whose only
/// write is the one statement of a successful [`RegistrationTx::insert_contact`] (which
/// then also finds or creates the lead) is atomic without a transaction of its own.
///
/// The trait does not demand `Send`: an adapter over a synchronous connection that never
/// leaves its thread (the SQLite writer) fits as well as an async one, whose futures are
/// `Send` through its concrete types.
pub trait RegistrationTx {
    /// Resolves the source and reads the candidates. The adapter finds or creates the
    /// lead named by `external_id` either here or with the contact in
    /// [`RegistrationTx::insert_contact`], and keeps it (or the id) until then.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`]`(Entity::Source)` when the source does not exist
    /// (the caller then rolls back, so no lead is left behind).
    fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> impl Future<Output = Result<Prepared, StoreError>>;

    /// Claims `operator` (raises its counter only while it is below the limit) and inserts
    /// the contact, bound to the prepared lead, with the decision that chose it; with
    /// `None` it inserts an unassigned contact.
    ///
    /// # Errors
    /// Only driver failures; a lost claim is [`Inserted::OperatorFull`], not an error.
    fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        decision: &Decision,
    ) -> impl Future<Output = Result<Inserted, StoreError>>;
}

/// A registration's unit of work that can also hold an idempotency key: the key's claim
/// and its answer must commit together with the contact, so only a unit of work that is
/// one transaction (or savepoint) implements it; a registration without a key may run in
/// a cheaper one ([`RegistrationTx`] alone).
pub trait KeyedRegistrationTx: RegistrationTx {
    /// Takes `key` for this registration, or reports how it was used within its
    /// lifetime. When another unit of work holds the same key uncommitted, this MUST wait
    /// for it and then answer from what it committed (or claim the key if it rolled back).
    /// A store whose units of work never overlap may write the key only in
    /// [`KeyedRegistrationTx::record_key`], so that a registration failing in between has
    /// written nothing.
    ///
    /// # Errors
    /// Only driver failures.
    fn claim_key(
        &mut self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<KeyClaim, StoreError>>;

    /// Stores the answer to a claimed key, in this unit of work.
    ///
    /// # Errors
    /// Only driver failures.
    fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> impl Future<Output = Result<(), StoreError>>;
}
