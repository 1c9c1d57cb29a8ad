//! The event hub: one reader of the outbox per process, shared by every stream.
//!
//! While anyone listens, a task reads the events after its cursor every `poll`
//! ([`crm_core::Store::read_events`], which on PostgreSQL stops at a gap that may still be
//! filled), renders each once and keeps the newest in a ring. A stream that is behind the
//! ring reads its events from the store (`events_between`, up to the hub's position, where
//! no gap can still be filled), then follows the ring. Polling the outbox, rather than a
//! signal from the writer, is what lets a replica see the events other replicas commit:
//! each hub reads the one database.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crm_core::{Event, EventCursor, EventType, Store};
use tokio::sync::{mpsc, watch};

/// Events kept in memory for streams that are a little behind.
const RING: usize = 16_384;
/// Events read from the store at once.
const BATCH: u32 = 1_000;

/// How the stream behaves.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// How often the hub reads the outbox while someone listens.
    pub poll: Duration,
    /// How long a stream stays silent before it sends a comment line.
    pub heartbeat: Duration,
    /// The reconnection delay a stream asks its client for, once, at its start.
    pub retry: Duration,
    /// Turns `true` (or is dropped) when the server shuts down: every stream then ends.
    /// `None`: streams end only when their clients go.
    pub closing: Option<watch::Receiver<bool>>,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(10),
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            closing: None,
        }
    }
}

/// One event, rendered once for every stream.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) seq: u64,
    pub(crate) kind: EventType,
    /// The envelope ([`Event::envelope`]).
    pub(crate) envelope: String,
}

impl From<&Event> for Frame {
    fn from(event: &Event) -> Self {
        Self {
            seq: event.seq,
            kind: event.kind,
            envelope: event.envelope(),
        }
    }
}

/// What a stream sends.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// The reconnection delay, first.
    Retry(Duration),
    /// Events after the client's position were pruned: it must read the state again, and
    /// goes on from this number.
    Reset(u64),
    /// An event.
    Event(Arc<Frame>),
}

struct Ring {
    /// Whether the reading task runs.
    running: bool,
    /// The ring holds every event after this number, up to the hub's position.
    from: u64,
    frames: VecDeque<Arc<Frame>>,
}

/// The process's reader of the outbox.
pub(crate) struct Hub<S> {
    store: Arc<S>,
    pub(crate) settings: EventSettings,
    ring: Mutex<Ring>,
    /// The hub's position (`None` until its task has found where to start).
    head: watch::Sender<Option<u64>>,
}

impl<S: Store> Hub<S> {
    pub(crate) fn new(store: Arc<S>, settings: EventSettings) -> Self {
        Self {
            store,
            settings,
            ring: Mutex::new(Ring {
                running: false,
                from: 0,
                frames: VecDeque::new(),
            }),
            head: watch::channel(None).0,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a stream for a client at `last` (its `Last-Event-ID`; `None`: from now on),
    /// sending only `types` when given.
    pub(crate) fn stream(
        self: &Arc<Self>,
        last: Option<u64>,
        types: Option<BTreeSet<EventType>>,
    ) -> mpsc::Receiver<Item> {
        let head = {
            let mut ring = self.ring();
            let head = self.head.subscribe();
            if !ring.running {
                ring.running = true;
                tokio::spawn(Arc::clone(self).run());
            }
            head
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(Arc::clone(self).feed(head, last, types, tx));
        rx
    }

    /// The hub's task: reads the outbox while anyone listens.
    async fn run(self: Arc<Self>) {
        let start = loop {
            match self.store.settled_event_head().await {
                Ok(head) => break head,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the newest event");
                    tokio::time::sleep(self.settings.poll.max(Duration::from_millis(500))).await;
                }
            }
        };
        {
            let mut ring = self.ring();
            ring.frames.clear();
            ring.from = start;
        }
        self.head.send_replace(Some(start));
        let mut cursor = EventCursor::at(start);
        loop {
            {
                let mut ring = self.ring();
                if self.head.receiver_count() == 0 {
                    ring.running = false;
                    self.head.send_replace(None);
                    return;
                }
            }
            let full = match self.store.read_events(cursor, BATCH).await {
                Ok((next, page)) => {
                    let frames: Vec<Arc<Frame>> = page
                        .events
                        .iter()
                        .map(|e| Arc::new(Frame::from(e)))
                        .collect();
                    let full = frames.len() == BATCH as usize;
                    let mut ring = self.ring();
                    if page.pruned_through > cursor.after {
                        // The hub fell behind retention: streams read what is left.
                        ring.frames.clear();
                        ring.from = page.pruned_through;
                    }
                    ring.frames.extend(frames);
                    while ring.frames.len() > RING {
                        if let Some(oldest) = ring.frames.pop_front() {
                            ring.from = oldest.seq;
                        }
                    }
                    drop(ring);
                    cursor = next;
                    self.head.send_if_modified(|head| {
                        let moved = *head != Some(cursor.after);
                        *head = Some(cursor.after);
                        moved
                    });
                    full
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read events");
                    false
                }
            };
            if !full {
                tokio::time::sleep(self.settings.poll).await;
            }
        }
    }

    /// The ring's events after `last`, or `None` when the ring does not reach back to it.
    fn recent(&self, last: u64) -> Option<Vec<Arc<Frame>>> {
        let ring = self.ring();
        if last < ring.from {
            return None;
        }
        let start = ring.frames.partition_point(|f| f.seq <= last);
        Some(ring.frames.range(start..).cloned().collect())
    }

    /// One stream's task: sends what follows `last`, until the client goes or the server
    /// shuts down.
    async fn feed(
        self: Arc<Self>,
        mut head: watch::Receiver<Option<u64>>,
        last: Option<u64>,
        types: Option<BTreeSet<EventType>>,
        tx: mpsc::Sender<Item>,
    ) {
        let closing = self.settings.closing.clone();
        let closed = async move {
            match closing {
                Some(mut closing) => drop(closing.wait_for(|closing| *closing).await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(closed);
        let wanted = |kind: EventType| types.as_ref().is_none_or(|t| t.contains(&kind));
        if tx.send(Item::Retry(self.settings.retry)).await.is_err() {
            return;
        }
        let mut last = last;
        loop {
            let horizon = *head.borrow_and_update();
            if let Some(horizon) = horizon {
                let position = *last.get_or_insert(horizon);
                if position < horizon {
                    let Some(moved) = self.catch_up(position, horizon, &wanted, &tx).await else {
                        return;
                    };
                    last = Some(moved);
                    continue;
                }
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                () = &mut closed => return,
            }
        }
    }

    /// Sends what follows `position` up to `horizon` (from the ring, or else from the
    /// store); returns the new position, or `None` when the stream is over.
    async fn catch_up(
        &self,
        position: u64,
        horizon: u64,
        wanted: &impl Fn(EventType) -> bool,
        tx: &mpsc::Sender<Item>,
    ) -> Option<u64> {
        if let Some(frames) = self.recent(position) {
            let mut last = position;
            for frame in frames {
                last = frame.seq;
                if wanted(frame.kind) {
                    tx.send(Item::Event(frame)).await.ok()?;
                }
            }
            return Some(last.max(horizon));
        }
        let page = match self.store.events_between(position, horizon, BATCH).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read events for a stream");
                tokio::time::sleep(self.settings.poll.max(Duration::from_millis(100))).await;
                return Some(position);
            }
        };
        if page.pruned_through > position {
            tx.send(Item::Reset(page.pruned_through)).await.ok()?;
            return Some(page.pruned_through);
        }
        let Some(newest) = page.events.last().map(|e| e.seq) else {
            // Only gaps that will never be filled up to the horizon.
            return Some(horizon);
        };
        for event in page.events.iter().filter(|e| wanted(e.kind)) {
            tx.send(Item::Event(Arc::new(Frame::from(event))))
                .await
                .ok()?;
        }
        Some(newest)
    }
}
