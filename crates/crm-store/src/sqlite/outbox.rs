//! The newest committed events, kept in memory by the writer that wrote them.
//!
//! Every SQLite write goes through the one writer thread, so the events it commits are,
//! in order, every event there is. A job's events are noted as they are inserted, and
//! retention's pruning as it moves its mark ([`Pending`]); the notes are dropped with the
//! job or group that is undone, and handed to the [`Tail`] once their group has committed,
//! before anyone is answered. Readers of the outbox (the
//! event hub, the webhook sender) then read what follows their position from memory
//! instead of through the read pool: with ten streams and a webhook endpoint, those reads
//! were about a tenth of the server's CPU (docs/benchmarks.md). A position from before
//! what the tail holds is read from the database as before.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
};

use chrono::{DateTime, SubsecRound, Utc};
use crm_core::{ContactId, Event, EventCursor, EventPage, EventType};

/// Committed events the tail keeps (about a second of the heaviest load measured).
const KEPT: usize = 16_384;

/// An event as the writer inserted it.
#[derive(Debug)]
pub struct Written {
    /// Its number, the row id the insert took.
    seq: u64,
    /// What happened.
    kind: EventType,
    /// When, at the precision stored.
    at: DateTime<Utc>,
    /// The contact, stored beside the data.
    contact_id: Option<ContactId>,
    /// The data object as stored (without the contact's id).
    data: String,
}

impl Written {
    /// An event inserted at `at`: kept at the precision the database keeps.
    #[must_use]
    pub fn new(
        seq: i64,
        kind: EventType,
        at: DateTime<Utc>,
        contact_id: Option<ContactId>,
        data: String,
    ) -> Self {
        Self {
            seq: seq.unsigned_abs(),
            kind,
            at: at.trunc_subsecs(6),
            contact_id,
            data,
        }
    }

    fn event(&self) -> Event {
        Event::from_stored(self.seq, self.kind, self.at, self.contact_id, &self.data)
    }
}

/// What the writer's open transaction did to the outbox, in order.
#[derive(Debug, Default)]
pub struct Pending(RefCell<Vec<Note>>);

/// One change to the outbox.
#[derive(Debug)]
pub enum Note {
    /// An event inserted (shared: the tail's readers take it without copying while they
    /// hold the lock the writer publishes under).
    Written(Arc<Written>),
    /// Retention deleted every event up to this number.
    Pruned(u64),
}

impl Pending {
    /// Notes an event the transaction inserted.
    pub fn push(&self, event: Written) {
        self.0.borrow_mut().push(Note::Written(Arc::new(event)));
    }

    /// Notes the event the statement just run on `conn` inserted: its number is the row id
    /// that insert took.
    pub fn inserted(
        &self,
        conn: &rusqlite::Connection,
        kind: EventType,
        at: DateTime<Utc>,
        contact_id: Option<ContactId>,
        data: String,
    ) {
        self.push(Written::new(
            conn.last_insert_rowid(),
            kind,
            at,
            contact_id,
            data,
        ));
    }

    /// Notes that the transaction pruned every event up to `through`.
    pub fn pruned(&self, through: u64) {
        self.0.borrow_mut().push(Note::Pruned(through));
    }

    /// How many are noted: where a job that may be undone starts.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Forgets those after the first `len` (their job was undone).
    pub fn truncate(&self, len: usize) {
        self.0.borrow_mut().truncate(len);
    }

    /// Takes them all (their group committed, or was undone).
    pub fn take(&self) -> Vec<Note> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

/// The newest committed events.
#[derive(Debug, Default)]
pub struct Tail(Mutex<Option<Kept>>);

#[derive(Debug)]
struct Kept {
    /// Every committed event after this number is in `events`.
    from: u64,
    /// Retention's mark: every event up to it was pruned (`event_log.pruned_through`, what
    /// a read of the table answers beside its events). Never above `from`.
    mark: u64,
    events: VecDeque<Arc<Written>>,
}

impl Kept {
    fn newest(&self) -> u64 {
        self.events.back().map_or(self.from, |e| e.seq)
    }
}

impl Tail {
    fn kept(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts keeping what commits after event `newest` (the newest stored when the
    /// writer started), with retention's `mark` as the table has it.
    pub fn start(&self, newest: u64, mark: u64) {
        *self.kept() = Some(Kept {
            from: newest.max(mark),
            mark,
            events: VecDeque::new(),
        });
    }

    /// Stops keeping events: readers read the database until [`Self::start`].
    pub fn stop(&self) {
        *self.kept() = None;
    }

    /// Applies what a committed group did: its events follow every event added before;
    /// what retention pruned is dropped, so that a reader from before it is told (it reads
    /// the database and its retention mark). Whether the tail is kept: after
    /// [`Self::stop`] (or before [`Self::start`]) nothing is applied. An event that does
    /// not follow the newest one (which one writer committing in order never gives) stops
    /// the tail rather than answer readers out of order: the writer starts it again from
    /// the table.
    pub fn publish(&self, notes: Vec<Note>) -> bool {
        let mut guard = self.kept();
        let Some(kept) = guard.as_mut() else {
            return false;
        };
        for note in notes {
            match note {
                Note::Written(event) => {
                    if event.seq <= kept.newest() {
                        tracing::error!(
                            seq = event.seq,
                            newest = kept.newest(),
                            "an event committed out of order: the outbox's readers read the table"
                        );
                        *guard = None;
                        return false;
                    }
                    kept.events.push_back(event);
                }
                Note::Pruned(through) => {
                    let gone = kept.events.partition_point(|e| e.seq <= through);
                    kept.events.drain(..gone);
                    kept.from = kept.from.max(through);
                    kept.mark = kept.mark.max(through);
                }
            }
        }
        let over = kept.events.len().saturating_sub(KEPT);
        if over > 0 {
            kept.from = kept.events[over - 1].seq;
            kept.events.drain(..over);
        }
        true
    }

    /// The newest committed event's number; `None` before [`Self::start`].
    pub fn newest(&self) -> Option<u64> {
        self.kept().as_ref().map(Kept::newest)
    }

    /// The events with `after < seq <= upto`, at most `limit`, in order; `None` when
    /// the tail does not reach back to `after` (read the database).
    pub fn between(&self, after: u64, upto: u64, limit: u32) -> Option<EventPage> {
        // Only the shared events are taken under the lock, which the writer publishes
        // under before it answers anyone; they are built into `Event`s after it.
        let (mark, written): (u64, Vec<Arc<Written>>) = {
            let kept = self.kept();
            let kept = kept.as_ref().filter(|kept| after >= kept.from)?;
            let start = kept.events.partition_point(|e| e.seq <= after);
            let written = kept
                .events
                .range(start..)
                .take_while(|e| e.seq <= upto)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .cloned()
                .collect();
            (kept.mark, written)
        };
        // Nothing after `after` was pruned (the mark is not above it): the tail holds it all.
        Some(EventPage {
            pruned_through: mark,
            events: written.iter().map(|w| w.event()).collect(),
        })
    }

    /// [`crm_core::Store::read_events`] from memory; `None` when the tail does not reach
    /// back to the cursor.
    pub fn read(&self, mut cursor: EventCursor, limit: u32) -> Option<(EventCursor, EventPage)> {
        let mut page = self.between(cursor.after, u64::MAX, limit)?;
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        // One writer commits in order: every gap is final, everything read is delivered.
        let deliver = cursor.advance(&seqs, None);
        page.events.truncate(deliver);
        Some((cursor, page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(seq: i64) -> Note {
        Note::Written(Arc::new(Written::new(
            seq,
            EventType::ContactClosed,
            Utc::now(),
            Some(ContactId(seq)),
            "{}".into(),
        )))
    }

    #[test]
    fn reads_what_follows_a_position_it_reaches_back_to() {
        let tail = Tail::default();
        assert!(tail.between(0, u64::MAX, 10).is_none(), "not started");
        tail.start(5, 2);
        tail.publish(vec![written(6), written(7)]);
        tail.publish(vec![written(9)]);
        let seqs = |page: EventPage| page.events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(tail.between(5, u64::MAX, 10).expect("in the tail")),
            [6, 7, 9]
        );
        assert_eq!(seqs(tail.between(6, 8, 10).expect("in the tail")), [7]);
        // Retention's mark as the table has it, beside the events.
        assert_eq!(tail.between(6, 8, 10).map(|p| p.pruned_through), Some(2));
        assert_eq!(
            seqs(tail.between(5, u64::MAX, 2).expect("in the tail")),
            [6, 7]
        );
        assert!(tail.between(4, u64::MAX, 10).is_none(), "before the tail");
        assert_eq!(tail.newest(), Some(9));
        let (cursor, page) = tail.read(EventCursor::at(7), 10).expect("in the tail");
        assert_eq!((cursor.after, seqs(page)), (9, vec![9]));
    }

    #[test]
    fn keeps_the_newest_and_moves_its_start_past_what_it_drops() {
        let tail = Tail::default();
        tail.start(0, 0);
        let count = i64::try_from(KEPT).expect("small") + 10;
        tail.publish((1..=count).map(written).collect());
        assert!(tail.between(9, u64::MAX, 1).is_none());
        let page = tail.between(10, u64::MAX, 1).expect("in the tail");
        assert_eq!(page.events[0].seq, 11);
        assert_eq!(tail.newest(), Some(count.unsigned_abs()));
    }

    #[test]
    fn a_reader_from_before_what_was_pruned_reads_the_database() {
        let tail = Tail::default();
        tail.start(0, 0);
        tail.publish((1..=5).map(written).collect());
        tail.publish(vec![Note::Pruned(3)]);
        assert!(tail.between(2, u64::MAX, 10).is_none());
        let page = tail.between(3, u64::MAX, 10).expect("in the tail");
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(page.pruned_through, 3);
        assert_eq!(tail.newest(), Some(5));
    }

    #[test]
    fn an_event_out_of_order_stops_the_tail() {
        let tail = Tail::default();
        tail.start(0, 0);
        assert!(tail.publish((1..=3).map(written).collect()));
        assert!(!tail.publish(vec![written(4), written(3)]), "stopped");
        assert!(
            tail.between(3, u64::MAX, 10).is_none(),
            "readers read the table"
        );
        assert_eq!(tail.newest(), None);
    }

    #[test]
    fn starts_no_lower_than_retentions_mark() {
        let tail = Tail::default();
        tail.start(0, 4);
        assert!(
            tail.between(3, u64::MAX, 10).is_none(),
            "pruned: read the table"
        );
        assert!(tail.between(4, u64::MAX, 10).is_some());
    }
}
