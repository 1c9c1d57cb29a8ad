//! Ports: the traits storage adapters implement. The core owns them; adapters (SQLite,
//! PostgreSQL, an in-memory fake) live elsewhere.
//!
//! Every method documents the errors it may return ([`StoreError`]) as a contract: an
//! adapter MUST map the situation named to that variant, so callers (the HTTP layer) can
//! rely on it.

use std::future::Future;

use chrono::{DateTime, Utc};

mod registration;
mod webhooks;

pub use registration::{Inserted, KeyClaim, KeyedRegistrationTx, Prepared, RegistrationTx};
pub use webhooks::WebhookStore;

use crate::{
    ApiKey, ApiKeyId, Candidate, Contact, ContactFilter, ContactId, DecisionEntry, EventCursor,
    EventPage, IdempotencyKey, Lead, LeadFilter, LeadId, LeadWithContacts, NewApiKey, NewContact,
    NewOperator, NewSource, NewSourceKey, Operator, OperatorFilter, OperatorId, OperatorLoad,
    OperatorPatch, OperatorStats, Registration, Source, SourceId, SourceKey, SourceKeyId,
    SourcePatch, SourceQueue, StoreError, WeightSet,
    insight::{SourceDecision, Window},
};

/// How busy the store's connections are, for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open in the pool.
    pub connections: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The pool's limit.
    pub max_connections: u32,
    /// Writes waiting for a single writer, where the adapter has one (SQLite).
    pub queued_writes: Option<u64>,
    /// Groups of writes that single writer ran twice because one write failed after
    /// writing, since it started (SQLite).
    pub write_group_reruns: Option<u64>,
}

/// The whole service as storage offers it: what the HTTP layer calls.
pub trait Store: WebhookStore + Send + Sync + 'static {
    /// Checks that the database answers and, where the adapter can tell without writing,
    /// that writes commit (the SQLite writer: running, its last commit succeeded).
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when either fails, with a cause whose own
    /// message (not its sources) is fit to show an anonymous caller of `/health`.
    fn health(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates an operator with no load.
    ///
    /// # Errors
    /// Only driver failures.
    fn create_operator(
        &self,
        new: NewOperator,
    ) -> impl Future<Output = Result<Operator, StoreError>> + Send;

    /// Lists operators by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn list_operators(
        &self,
        filter: OperatorFilter,
    ) -> impl Future<Output = Result<Vec<Operator>, StoreError>> + Send;

    /// Reads one operator.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn get_operator(
        &self,
        id: OperatorId,
    ) -> impl Future<Output = Result<Operator, StoreError>> + Send;

    /// Changes the given fields of an operator.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn update_operator(
        &self,
        id: OperatorId,
        patch: OperatorPatch,
    ) -> impl Future<Output = Result<Operator, StoreError>> + Send;

    /// Deletes an operator and its weights.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist and
    /// [`StoreError::OperatorHasContacts`] when any contact (open or closed) names it.
    fn delete_operator(
        &self,
        id: OperatorId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates a source with no operators.
    ///
    /// # Errors
    /// MUST return [`StoreError::SourceCodeTaken`] when the code is in use.
    fn create_source(
        &self,
        new: NewSource,
    ) -> impl Future<Output = Result<Source, StoreError>> + Send;

    /// Lists sources by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn list_sources(&self) -> impl Future<Output = Result<Vec<Source>, StoreError>> + Send;

    /// Reads one source with its weights.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn get_source(&self, id: SourceId) -> impl Future<Output = Result<Source, StoreError>> + Send;

    /// Changes the given fields of a source.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist and
    /// [`StoreError::SourceCodeTaken`] when the new code belongs to another source.
    fn update_source(
        &self,
        id: SourceId,
        patch: SourcePatch,
    ) -> impl Future<Output = Result<Source, StoreError>> + Send;

    /// Deletes a source and its weights.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist and
    /// [`StoreError::SourceHasContacts`] when any contact came through it.
    fn delete_source(&self, id: SourceId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the source's whole weight set atomically: on any error nothing changes.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the source does not exist and
    /// [`StoreError::UnknownOperator`] (with the entry's index) for a missing operator.
    fn replace_weights(
        &self,
        id: SourceId,
        weights: WeightSet,
    ) -> impl Future<Output = Result<Source, StoreError>> + Send;

    /// Lists leads by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn list_leads(
        &self,
        filter: LeadFilter,
    ) -> impl Future<Output = Result<Vec<Lead>, StoreError>> + Send;

    /// Reads a lead with its contacts, oldest first.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn get_lead(
        &self,
        id: LeadId,
    ) -> impl Future<Output = Result<LeadWithContacts, StoreError>> + Send;

    /// Registers a contact atomically through [`register_contact`](crate::register_contact).
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`]`(Entity::Source)` for an unknown source, having
    /// written nothing; [`StoreError::Overloaded`] when the adapter sheds load.
    fn register_contact(
        &self,
        new: NewContact,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// Registers a contact at most once per idempotency key (see [`register_contact_once`](crate::register_contact_once)).
    ///
    /// # Errors
    /// As [`Store::register_contact`], and [`StoreError::IdempotencyKeyReused`] when the
    /// key came with a different request.
    fn register_contact_once(
        &self,
        new: NewContact,
        key: IdempotencyKey,
    ) -> impl Future<Output = Result<Registration, StoreError>> + Send;

    /// Lists contacts by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn list_contacts(
        &self,
        filter: ContactFilter,
    ) -> impl Future<Output = Result<Vec<Contact>, StoreError>> + Send;

    /// Reads one contact.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn get_contact(
        &self,
        id: ContactId,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// Closes a contact and releases its operator's counter; closing a closed contact
    /// changes nothing.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn close_contact(
        &self,
        id: ContactId,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// Assigns an open contact to an operator by hand, releasing the previous operator's
    /// counter; assigning it to its current operator changes nothing.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] for an unknown contact,
    /// [`StoreError::UnknownOperator`] for an unknown operator,
    /// [`StoreError::ContactClosed`], [`StoreError::OperatorInactive`] or
    /// [`StoreError::OperatorAtCapacity`] when the rule forbids it.
    fn assign_contact(
        &self,
        id: ContactId,
        operator_id: OperatorId,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// Takes an open contact from its operator by hand and puts it back in the queue at its
    /// place, releasing the operator's counter, then drains: in that drain the operator it
    /// was taken from is passed over for it ([`crate::Exclusion::UnassignedFrom`]). A
    /// contact that is waiting already is left as it is.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] for an unknown contact and
    /// [`StoreError::ContactClosed`] for a closed one.
    fn unassign_contact(
        &self,
        id: ContactId,
    ) -> impl Future<Output = Result<Contact, StoreError>> + Send;

    /// Load figures of every operator, by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn operator_stats(&self)
    -> impl Future<Output = Result<Vec<OperatorStats>, StoreError>> + Send;

    /// Every operator's counters, by id: read on every metrics scrape, so it MUST read
    /// the counters the store keeps and never count contacts.
    ///
    /// # Errors
    /// Only driver failures.
    fn operator_loads(&self) -> impl Future<Output = Result<Vec<OperatorLoad>, StoreError>> + Send;

    /// A contact's decision history, oldest first.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the contact does not exist.
    fn contact_decisions(
        &self,
        id: ContactId,
    ) -> impl Future<Output = Result<Vec<DecisionEntry>, StoreError>> + Send;

    /// Source `source`'s history in `window`, unassignments left out, each entry handed to
    /// `sink` as it is read (in no particular order: the reports fold them); returns how
    /// many. Streamed: a window of a million entries is never held whole, and it MUST cost
    /// in proportion to the window's entries (of all sources), never to the whole history.
    ///
    /// # Errors
    /// Only driver failures.
    fn source_decisions<'a>(
        &'a self,
        source: SourceId,
        window: Window,
        sink: &'a mut (dyn FnMut(SourceDecision) + Send),
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a;

    /// How many of source `source`'s contacts each operator was given by the rule in
    /// `window` (registered or drained entries), by operator id: a count, no record read.
    ///
    /// # Errors
    /// Only driver failures.
    fn source_assignments(
        &self,
        source: SourceId,
        window: Window,
    ) -> impl Future<Output = Result<Vec<(OperatorId, u64)>, StoreError>> + Send;

    /// The operators of `weights` as the rule would see them now, in the order given, each
    /// with the weight given: activity, load, limit, and whether its pace admits an
    /// assignment at [`Store::now`]. Reads only.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownOperator`] (with its position) for an operator
    /// that does not exist.
    fn candidates(
        &self,
        weights: &[(OperatorId, i64)],
    ) -> impl Future<Output = Result<Vec<Candidate>, StoreError>> + Send;

    /// The store's clock: the "now" of its writes (registrations, drains, paces) and of
    /// reports whose window is not given.
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// The waiting queue per source that has contacts waiting, by source id, with how many
    /// of them arrived before `stale_before` when it is given. Read on every metrics
    /// scrape: it MUST cost in proportion to the queue (an index of the waiting contacts),
    /// never to all contacts.
    ///
    /// # Errors
    /// Only driver failures.
    fn queue(
        &self,
        stale_before: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<SourceQueue>, StoreError>> + Send;

    /// Assigns waiting contacts, oldest first, each by the rule, until nobody eligible
    /// remains or nothing waits; returns how many it assigned. Every write that frees or
    /// adds capacity drains by itself: this is the safety sweep, for what a trigger missed
    /// (another replica's change) and for contacts that waited before the upgrade.
    ///
    /// # Errors
    /// Only driver failures; what was assigned before one stays assigned.
    fn drain_queue(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The events after `cursor` that may be delivered now, in order, at most `limit`, with
    /// the cursor moved past them. Events are written by the unit of work of the change
    /// they report; where units of work commit out of sequence order (PostgreSQL), the read
    /// stops at the first gap that may still be filled ([`EventCursor`]), so no event is
    /// ever passed over. A cursor below the retention mark is moved up to it (the page
    /// says how far retention pruned).
    ///
    /// # Errors
    /// Only driver failures.
    fn read_events(
        &self,
        cursor: EventCursor,
        limit: u32,
    ) -> impl Future<Output = Result<(EventCursor, EventPage), StoreError>> + Send;

    /// The newest event's number, once no event up to it can still commit: where a
    /// reader that wants only what comes next starts its cursor.
    ///
    /// # Errors
    /// Only driver failures.
    fn settled_event_head(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The events with `after < seq <= upto`, in order, at most `limit`: only for numbers
    /// a [`Store::read_events`] cursor has passed, among which no gap can still be filled.
    ///
    /// # Errors
    /// Only driver failures.
    fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send;

    /// Deletes up to `batch` of the oldest events written before `before` that are not
    /// among the newest `keep`, moving the retention mark past them; returns how many.
    ///
    /// # Errors
    /// Only driver failures.
    fn prune_events(
        &self,
        before: DateTime<Utc>,
        keep: u64,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How busy the connections are; cheap, no I/O.
    fn pool_status(&self) -> PoolStatus;

    /// The drain latencies noted since the last call: for each contact a drain assigned,
    /// the time from the moment the drain was asked for (right after the commit that freed
    /// capacity, or the start of a sweep) until the contact was written to its operator.
    /// Cheap, no I/O; a store that keeps none returns nothing.
    fn take_drain_latencies(&self) -> Vec<std::time::Duration> {
        Vec::new()
    }

    /// Stores a source's new ingest key.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the source does not exist.
    fn create_source_key(
        &self,
        new: NewSourceKey,
    ) -> impl Future<Output = Result<SourceKey, StoreError>> + Send;

    /// A source's keys, by id.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the source does not exist.
    fn list_source_keys(
        &self,
        source_id: SourceId,
    ) -> impl Future<Output = Result<Vec<SourceKey>, StoreError>> + Send;

    /// Revokes a key of a source.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the source has no such key.
    fn delete_source_key(
        &self,
        source_id: SourceId,
        key_id: SourceKeyId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a key of `/api/keys`.
    ///
    /// # Errors
    /// Only driver failures.
    fn create_api_key(
        &self,
        new: NewApiKey,
    ) -> impl Future<Output = Result<ApiKey, StoreError>> + Send;

    /// The keys of `/api/keys`, by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn list_api_keys(&self) -> impl Future<Output = Result<Vec<ApiKey>, StoreError>> + Send;

    /// Revokes a key of `/api/keys`.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when there is no such key.
    fn delete_api_key(&self, id: ApiKeyId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Finds the key of `/api/keys` with this hash and notes its use; `None` when no key
    /// has it.
    ///
    /// # Errors
    /// Only driver failures.
    fn authenticate_api_key(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<ApiKey>, StoreError>> + Send;

    /// Finds the key with this hash and notes its use; `None` when no key has it.
    ///
    /// # Errors
    /// Only driver failures.
    fn authenticate_source_key(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<SourceKey>, StoreError>> + Send;
}
