//! Events: what other systems are told about each committed write, and the rule a reader
//! of the outbox follows so that it never skips one.
//!
//! Every write that changes something stores one event in the same unit of work (the
//! transactional outbox): a contact registered, assigned, unassigned or closed; an
//! operator or a source created, updated or deleted; a source's weights replaced. Events
//! have one global order, their sequence number (`seq`), and are rendered once, as the
//! envelope the stream and the webhooks send:
//!
//! ```json
//! {"id":"evt_12","seq":12,"type":"contact.created","timestamp":"2026-12-06T20:00:00.000000Z",
//!  "data":{"contact_id":40,"source_id":1,"operator_id":7,"status":"open",
//!          "decision":{"path":"registered","summary":"2 of 3 eligible: 1 at_capacity; drew 17 of 40 → operator 7"}}}
//! ```

use std::{fmt, str::FromStr};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::{ContactId, ContactStatus, DecisionPath, OperatorId, SourceId, SourceRule, WeightSet};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A contact was registered: assigned, or stored waiting (`queued`).
    ContactCreated,
    /// A contact was given to an operator by a drain or by hand.
    ContactAssigned,
    /// A contact was taken from its operator by hand and put back in the queue.
    ContactUnassigned,
    /// A contact was closed.
    ContactClosed,
    /// An operator was created.
    OperatorCreated,
    /// An operator's fields changed.
    OperatorUpdated,
    /// An operator was deleted.
    OperatorDeleted,
    /// A source was created.
    SourceCreated,
    /// A source's fields changed (its strategy included).
    SourceUpdated,
    /// A source was deleted.
    SourceDeleted,
    /// A source's weights were replaced by a different set.
    SourceWeightsReplaced,
}

impl EventType {
    /// Every type, in the order of the documentation.
    pub const ALL: [Self; 11] = [
        Self::ContactCreated,
        Self::ContactAssigned,
        Self::ContactUnassigned,
        Self::ContactClosed,
        Self::OperatorCreated,
        Self::OperatorUpdated,
        Self::OperatorDeleted,
        Self::SourceCreated,
        Self::SourceUpdated,
        Self::SourceDeleted,
        Self::SourceWeightsReplaced,
    ];

    /// The name on the wire and in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ContactCreated => "contact.created",
            Self::ContactAssigned => "contact.assigned",
            Self::ContactUnassigned => "contact.unassigned",
            Self::ContactClosed => "contact.closed",
            Self::OperatorCreated => "operator.created",
            Self::OperatorUpdated => "operator.updated",
            Self::OperatorDeleted => "operator.deleted",
            Self::SourceCreated => "source.created",
            Self::SourceUpdated => "source.updated",
            Self::SourceDeleted => "source.deleted",
            Self::SourceWeightsReplaced => "source.weights_replaced",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// An event as a unit of work writes it: its type, the contact it is about (stored in a
/// column of its own, so a statement that creates the contact can fill it in), and the
/// rest of its data as a JSON object without that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventType,
    /// The contact, for `contact.*` events.
    pub contact_id: Option<ContactId>,
    /// The data object, without `contact_id`.
    pub data: String,
}

/// A contact's state as its events report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactState {
    /// Its source.
    pub source_id: SourceId,
    /// Its operator now (`None`: waiting).
    pub operator_id: Option<OperatorId>,
    /// Open or closed.
    pub status: ContactStatus,
    /// The decision that led here, for a person: the path and its one-line summary
    /// ([`crate::DecisionEntry::summary`]). `None` for a close.
    pub decision: Option<(DecisionPath, String)>,
}

impl NewEvent {
    /// A `contact.*` event about contact `id` (`None` when the statement that writes the
    /// event creates the contact and fills the id in).
    #[must_use]
    pub fn contact(kind: EventType, id: Option<ContactId>, state: &ContactState) -> Self {
        /// The data object, serialised straight from the state: every registration writes
        /// one, and building a `serde_json::Value` first cost the SQLite writer about
        /// 1 µs each (docs/benchmarks.md).
        #[derive(serde::Serialize)]
        struct Data<'a> {
            source_id: i64,
            operator_id: Option<i64>,
            status: &'static str,
            decision: Option<Summary<'a>>,
        }
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            path: &'static str,
            summary: &'a str,
        }
        let data = Data {
            source_id: state.source_id.get(),
            operator_id: state.operator_id.map(OperatorId::get),
            status: state.status.as_str(),
            decision: state.decision.as_ref().map(|(path, summary)| Summary {
                path: path.as_str(),
                summary,
            }),
        };
        Self {
            kind,
            contact_id: id,
            // Plain fields and no map: serialising cannot fail (and an empty data would
            // break every envelope made of it).
            data: serde_json::to_string(&data).expect("plain fields serialise"),
        }
    }

    /// `operator.created` or `operator.updated`, with the operator's fields after the write.
    #[must_use]
    pub fn operator(kind: EventType, operator: &OperatorFields<'_>) -> Self {
        Self::plain(
            kind,
            json!({
                "operator_id": operator.id.get(),
                "name": operator.name,
                "is_active": operator.is_active,
                "max_active_contacts": operator.max_active_contacts,
                "max_assignments_per_minute": operator.max_assignments_per_minute,
            }),
        )
    }

    /// `operator.deleted`.
    #[must_use]
    pub fn operator_deleted(id: OperatorId) -> Self {
        Self::plain(EventType::OperatorDeleted, json!({"operator_id": id.get()}))
    }

    /// `source.created` or `source.updated`, with the source's fields after the write.
    #[must_use]
    pub fn source(kind: EventType, source: &SourceFields<'_>) -> Self {
        Self::plain(
            kind,
            json!({
                "source_id": source.id.get(),
                "name": source.name,
                "code": source.code,
                "strategy": source.rule.strategy.as_str(),
                "sticky_owner": source.rule.sticky_owner,
            }),
        )
    }

    /// `source.deleted`.
    #[must_use]
    pub fn source_deleted(id: SourceId) -> Self {
        Self::plain(EventType::SourceDeleted, json!({"source_id": id.get()}))
    }

    /// `source.weights_replaced`, with the new set.
    #[must_use]
    pub fn weights_replaced(id: SourceId, weights: &WeightSet) -> Self {
        let operators: Vec<_> = weights
            .entries()
            .iter()
            .map(|e| json!({"operator_id": e.operator_id.get(), "weight": e.weight.get()}))
            .collect();
        Self::plain(
            EventType::SourceWeightsReplaced,
            json!({"source_id": id.get(), "operators": operators}),
        )
    }

    fn plain(kind: EventType, data: serde_json::Value) -> Self {
        Self {
            kind,
            contact_id: None,
            data: data.to_string(),
        }
    }
}

/// An operator's fields as its events report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorFields<'a> {
    /// Identifier.
    pub id: OperatorId,
    /// Display name.
    pub name: &'a str,
    /// Whether it takes contacts.
    pub is_active: bool,
    /// Its limit of open contacts.
    pub max_active_contacts: i64,
    /// Its pace, if any.
    pub max_assignments_per_minute: Option<i64>,
}

/// A source's fields as its events report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFields<'a> {
    /// Identifier.
    pub id: SourceId,
    /// Display name.
    pub name: &'a str,
    /// Its code.
    pub code: &'a str,
    /// Its strategy and stickiness.
    pub rule: SourceRule,
}

/// An event as stored, with its place in the global order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its sequence number: the global order, and the stream's `id:`.
    pub seq: u64,
    /// What happened.
    pub kind: EventType,
    /// When the unit of work that wrote it ran.
    pub at: DateTime<Utc>,
    /// Its data object, `contact_id` first for `contact.*` events.
    pub data: String,
}

impl Event {
    /// Puts a stored event together: `data` is the object as written, without the
    /// contact's id, which is stored beside it.
    #[must_use]
    pub fn from_stored(
        seq: u64,
        kind: EventType,
        at: DateTime<Utc>,
        contact_id: Option<ContactId>,
        data: &str,
    ) -> Self {
        let data = match (contact_id, data.strip_prefix('{')) {
            (Some(id), Some("}")) => format!("{{\"contact_id\":{id}}}"),
            (Some(id), Some(rest)) => format!("{{\"contact_id\":{id},{rest}"),
            _ => data.to_owned(),
        };
        Self {
            seq,
            kind,
            at,
            data,
        }
    }

    /// The stable id: the receiver's idempotency key (Standard Webhooks' `webhook-id`).
    #[must_use]
    pub fn id(&self) -> String {
        format!("evt_{}", self.seq)
    }

    /// The envelope the stream and the webhooks send, as compact JSON.
    #[must_use]
    pub fn envelope(&self) -> String {
        format!(
            "{{\"id\":\"evt_{seq}\",\"seq\":{seq},\"type\":\"{kind}\",\"timestamp\":\"{at}\",\"data\":{data}}}",
            seq = self.seq,
            kind = self.kind,
            at = self.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            data = self.data,
        )
    }
}

/// One read of the outbox: events in sequence order, and how far retention had pruned
/// when they were read (in the same snapshot, so a reader that finds its position below
/// that mark knows events after it may be gone, and none of the events read were).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    /// Every event up to this number was pruned (0: none yet).
    pub pruned_through: u64,
    /// The events read.
    pub events: Vec<Event>,
}

/// Where a reader of the outbox stands, and what it knows of the gaps after it.
///
/// Sequence numbers are taken when an event is written and become visible when its unit
/// of work commits. With one writer (SQLite) that is in order. With several (PostgreSQL)
/// a unit of work that took 10 may commit after the one that took 11, so a reader that
/// saw 11 and moved past 10 would skip it for good; and a number taken by a unit of work
/// that was rolled back is never filled. So a reader delivers the events after its
/// position only while they follow on without a gap, and passes a gap only once it knows
/// the gap is final: every unit of work that could still fill it has ended.
///
/// When a read sees a gap below a visible event, the unit of work holding the missing
/// number took it before the visible one's was taken, and had its transaction id by then
/// (the store takes the id before the number). So every transaction id assigned after that
/// read, such as a fresh one the reader asks for ([`EventCursor::bound_gap`]), is above the
/// holder's. Once a later snapshot's `xmin` (PostgreSQL's `pg_snapshot_xmin`: no
/// transaction below it is still running) reaches that bound, the holder has ended: the
/// gap is filled in that read, or it never will be. (The snapshot's own `xmax` is no such
/// bound: PostgreSQL sets it one past the newest *finished* transaction, so a transaction
/// that got its id later and is still running can be above it and below nothing.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCursor {
    /// The last sequence number delivered (0: none).
    pub after: u64,
    /// A gap seen after `after`: the highest number visible when it was seen, and a
    /// transaction id assigned after that read (`None` until the reader asked for one).
    gap: Option<(u64, Option<u64>)>,
}

impl EventCursor {
    /// A reader that has delivered everything up to `after`.
    #[must_use]
    pub const fn at(after: u64) -> Self {
        Self { after, gap: None }
    }

    /// Given the events after [`Self::after`] that one read saw, in sequence order, and the
    /// `xmin` of the snapshot it read them in (`None` where units of work commit in
    /// sequence order, as SQLite's one writer does), returns how many of them (a prefix)
    /// may be delivered now, and moves past them. When it stops at a gap it has no bound
    /// for yet, [`Self::needs_bound`] says so.
    pub fn advance(&mut self, seen: &[u64], xmin: Option<u64>) -> usize {
        // Gaps up to `settled` are final: their holders have all ended (with one writer,
        // every gap is: a number it took and rolled back is taken again).
        let settled = match (xmin, self.gap) {
            (None, _) => u64::MAX,
            (Some(xmin), Some((below, Some(bound)))) if xmin >= bound => below,
            (Some(_), _) => self.after,
        };
        let mut delivered = 0;
        for &seq in seen {
            // `seen` is after the position and increasing; anything else ends the prefix.
            if seq <= self.after || (seq != self.after + 1 && seq > settled) {
                break;
            }
            self.after = seq;
            delivered += 1;
        }
        if self.gap.is_some_and(|(below, _)| self.after >= below) {
            self.gap = None;
        }
        if xmin.is_some() && delivered < seen.len() && self.gap.is_none() {
            let highest = seen.last().copied().unwrap_or(self.after);
            self.gap = Some((highest, None));
        }
        delivered
    }

    /// Whether the reader stopped at a gap and must give it a bound: a transaction id
    /// assigned after the read that saw the gap ([`Self::bound_gap`]).
    #[must_use]
    pub const fn needs_bound(&self) -> bool {
        matches!(self.gap, Some((_, None)))
    }

    /// Bounds the gap the last read stopped at by `xid`, a transaction id assigned after
    /// that read.
    pub fn bound_gap(&mut self, xid: u64) {
        if let Some((below, None)) = self.gap {
            self.gap = Some((below, Some(xid)));
        }
    }
}
