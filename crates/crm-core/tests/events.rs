//! The outbox reader's rule ([`crm_core::EventCursor`]): against a model of PostgreSQL's
//! transactions (each takes its id, then its sequence numbers, and commits or rolls back
//! in any order) and snapshots (`xmax` one past the newest finished transaction, as
//! PostgreSQL sets it, so a running transaction above it holds `xmin` back not at all), a
//! reader that reads at random moments, sometimes a page at a time, and asks for a fresh
//! transaction id to bound each gap, delivers every committed event exactly once, in
//! sequence order, never one that was rolled back, and never passes an event that commits
//! later.
//! With one writer (no snapshot) it delivers whatever follows its position. Envelopes and
//! type names round-trip.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use crm_core::{
    ContactId, ContactState, ContactStatus, DecisionPath, Event, EventCursor, EventType, NewEvent,
    OperatorId, SourceId,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A new transaction takes its id.
    Begin,
    /// Transaction `n` (of those running, modulo) takes the next sequence number.
    Take(usize),
    /// Transaction `n` commits.
    Commit(usize),
    /// Transaction `n` rolls back.
    Abort(usize),
    /// The reader reads up to `limit` events.
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Begin),
        3 => any::<usize>().prop_map(Op::Take),
        2 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Abort),
        3 => (1usize..6).prop_map(Op::Read),
    ]
}

#[derive(Default)]
struct Db {
    next_xid: u64,
    /// The newest transaction id that has ended.
    latest_ended: u64,
    next_seq: u64,
    /// Running transactions: id and the numbers taken.
    running: Vec<(u64, Vec<u64>)>,
    committed: BTreeSet<u64>,
    aborted: BTreeSet<u64>,
}

impl Db {
    /// PostgreSQL's `xmin`: the oldest running id below `xmax`, where `xmax` is one past
    /// the newest ended transaction; `xmax` itself when none is.
    fn xmin(&self) -> u64 {
        let xmax = self.latest_ended + 1;
        self.running
            .iter()
            .map(|t| t.0)
            .filter(|&xid| xid < xmax)
            .min()
            .unwrap_or(xmax)
    }

    fn read(&mut self, reader: &mut EventCursor, limit: usize, delivered: &mut Vec<u64>) {
        let seen: Vec<u64> = self
            .committed
            .range(reader.after + 1..)
            .take(limit)
            .copied()
            .collect();
        let n = reader.advance(&seen, Some(self.xmin()));
        delivered.extend_from_slice(&seen[..n]);
        if reader.needs_bound() {
            // A fresh id, in a transaction of its own that ends at once.
            let xid = self.next_xid;
            self.next_xid += 1;
            self.latest_ended = self.latest_ended.max(xid);
            reader.bound_gap(xid);
        }
    }

    fn end(&mut self, n: usize, commit: bool) {
        if self.running.is_empty() {
            return;
        }
        let (xid, taken) = self.running.remove(n % self.running.len());
        self.latest_ended = self.latest_ended.max(xid);
        let into = if commit {
            &mut self.committed
        } else {
            &mut self.aborted
        };
        into.extend(taken);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_reader_delivers_exactly_the_committed_events_in_order(
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let mut db = Db { next_xid: 1, ..Db::default() };
        let mut reader = EventCursor::default();
        let mut delivered = Vec::new();
        for op in ops {
            match op {
                Op::Begin => {
                    db.running.push((db.next_xid, Vec::new()));
                    db.next_xid += 1;
                }
                Op::Take(n) if !db.running.is_empty() => {
                    db.next_seq += 1;
                    let i = n % db.running.len();
                    db.running[i].1.push(db.next_seq);
                }
                Op::Take(_) => {}
                Op::Commit(n) => db.end(n, true),
                Op::Abort(n) => db.end(n, false),
                Op::Read(limit) => db.read(&mut reader, limit, &mut delivered),
            }
            // Everything delivered is committed, in order, once.
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
            prop_assert!(delivered.iter().all(|s| db.committed.contains(s)));
            // Nothing running holds a number the reader has passed.
            for (_, taken) in &db.running {
                prop_assert!(taken.iter().all(|&s| s > reader.after), "passed {taken:?}");
            }
        }
        // Once everything has ended, a few reads deliver the rest.
        while !db.running.is_empty() {
            db.end(0, true);
        }
        for _ in 0..3 {
            db.read(&mut reader, usize::MAX, &mut delivered);
        }
        prop_assert_eq!(delivered, db.committed.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn with_one_writer_a_reader_delivers_what_follows_its_position(
        after in 0u64..50,
        seen in proptest::collection::btree_set(0u64..100, 0..20),
    ) {
        let mut reader = EventCursor::at(after);
        let seen: Vec<u64> = seen.into_iter().filter(|&s| s > after).collect();
        prop_assert_eq!(reader.advance(&seen, None), seen.len());
        prop_assert_eq!(reader.after, seen.last().copied().unwrap_or(after));
    }
}

/// The case PostgreSQL's `xmax` gets wrong: transaction 725 writes, 726 takes number 1,
/// 725 takes 2 and commits. The snapshot is `726:726:` although 726 runs; only the fresh
/// bound (727) keeps the reader waiting for it.
#[test]
fn a_gap_waits_until_its_holder_has_ended() {
    let mut reader = EventCursor::default();
    assert_eq!(reader.advance(&[2], Some(726)), 0);
    assert!(reader.needs_bound());
    reader.bound_gap(727);
    // 726 still runs (and is below the next snapshot's xmax now): nothing.
    assert_eq!(reader.advance(&[2, 3], Some(726)), 0);
    assert!(!reader.needs_bound());
    // Everything below 727 has ended and 1 is not there: it was rolled back.
    assert_eq!(reader.advance(&[2, 3], Some(728)), 2);
    assert_eq!(reader.after, 3);
}

#[test]
fn every_type_round_trips_and_is_named_as_documented() {
    for kind in EventType::ALL {
        assert_eq!(kind.as_str().parse::<EventType>(), Ok(kind));
    }
    assert!("contact.opened".parse::<EventType>().is_err());
    assert_eq!(
        EventType::SourceWeightsReplaced.as_str(),
        "source.weights_replaced"
    );
}

#[test]
fn a_contact_event_carries_its_id_first_and_its_state() {
    let state = ContactState {
        source_id: SourceId(3),
        operator_id: Some(OperatorId(7)),
        status: ContactStatus::Open,
        decision: Some((DecisionPath::Registered, "1 of 1 eligible".into())),
    };
    let new = NewEvent::contact(EventType::ContactCreated, None, &state);
    let at = Utc
        .with_ymd_and_hms(2026, 12, 6, 20, 0, 0)
        .single()
        .expect("a time");
    let event = Event::from_stored(12, new.kind, at, Some(ContactId(40)), &new.data);
    let envelope: serde_json::Value = serde_json::from_str(&event.envelope()).expect("JSON");
    assert_eq!(
        envelope,
        serde_json::json!({
            "id": "evt_12",
            "seq": 12,
            "type": "contact.created",
            "timestamp": "2026-12-06T20:00:00.000000Z",
            "data": {
                "contact_id": 40,
                "source_id": 3,
                "operator_id": 7,
                "status": "open",
                "decision": {"path": "registered", "summary": "1 of 1 eligible"}
            }
        })
    );
    assert_eq!(event.id(), "evt_12");
}

#[test]
fn a_contact_event_keeps_its_fields_in_the_documented_order() {
    let waiting = ContactState {
        source_id: SourceId(3),
        operator_id: None,
        status: ContactStatus::Open,
        decision: Some((DecisionPath::Queued, "queued \"behind\" 2".into())),
    };
    let closed = ContactState {
        operator_id: Some(OperatorId(7)),
        status: ContactStatus::Closed,
        decision: None,
        ..waiting.clone()
    };
    assert_eq!(
        NewEvent::contact(EventType::ContactCreated, None, &waiting).data,
        r#"{"source_id":3,"operator_id":null,"status":"open","decision":{"path":"queued","summary":"queued \"behind\" 2"}}"#
    );
    assert_eq!(
        NewEvent::contact(EventType::ContactClosed, Some(ContactId(40)), &closed).data,
        r#"{"source_id":3,"operator_id":7,"status":"closed","decision":null}"#
    );
}
