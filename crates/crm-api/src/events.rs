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

use bytes::{Bytes, BytesMut};
use crm_core::{ApiKeyId, Event, EventCursor, EventType, Store};
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
    /// Turns `true` (or is dropped) when the server shuts down: every stream then ends,
    /// and webhooks are no longer sent. `None`: streams end only when their clients go.
    pub closing: Option<watch::Receiver<bool>>,
    /// How webhooks are sent.
    pub webhooks: crate::webhooks::WebhookSettings,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(10),
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            closing: None,
            webhooks: crate::webhooks::WebhookSettings::default(),
        }
    }
}

/// One event, rendered once, as the SSE message every stream sends.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) seq: u64,
    pub(crate) kind: EventType,
    /// `id:`, `event:` and `data:` (the envelope, [`Event::envelope`]), and the blank line.
    pub(crate) message: Bytes,
}

impl From<&Event> for Frame {
    fn from(event: &Event) -> Self {
        let message = format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.seq,
            event.kind,
            event.envelope()
        );
        Self {
            seq: event.seq,
            kind: event.kind,
            message: Bytes::from(message),
        }
    }
}

/// The comment line a quiet stream sends.
const HEARTBEAT: &[u8] = b":\n\n";

/// The client's position cannot be resumed from: events after it were pruned (`pruned`),
/// or no event with that number was ever committed (`unknown`: an id from another
/// database, say one restored from a backup). It must read the state again; the stream
/// goes on after `mark`.
fn reset(reason: &str, mark: u64) -> Bytes {
    Bytes::from(format!(
        "id: {mark}\nevent: reset\ndata: {{\"reason\":\"{reason}\",\"resume_after\":{mark}}}\n\n"
    ))
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

    /// A new stream after `last` (the client's `Last-Event-ID`; from now on when `None`),
    /// of `types` (all when `None`); one read with viewer key `key` ends once the key is
    /// revoked.
    pub(crate) fn stream(
        self: &Arc<Self>,
        last: Option<u64>,
        types: Option<BTreeSet<EventType>>,
        key: Option<ApiKeyId>,
    ) -> mpsc::Receiver<Bytes> {
        let head = {
            let mut ring = self.ring();
            let head = self.head.subscribe();
            if !ring.running {
                ring.running = true;
                tokio::spawn(Arc::clone(self).run());
            }
            head
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(Arc::clone(self).feed(head, last, types, key, tx));
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

    /// One stream's task: sends what follows `last`, many messages per write, and a
    /// comment line when it has been quiet for a heartbeat, until the client goes or the
    /// server shuts down.
    async fn feed(
        self: Arc<Self>,
        mut head: watch::Receiver<Option<u64>>,
        last: Option<u64>,
        types: Option<BTreeSet<EventType>>,
        key: Option<ApiKeyId>,
        tx: mpsc::Sender<Bytes>,
    ) {
        let closed = crate::closing::closed(self.settings.closing.clone());
        tokio::pin!(closed);
        let revoked = self.revoked(key);
        tokio::pin!(revoked);
        let wanted = |kind: EventType| crm_core::subscribed(types.as_ref(), kind);
        // "From now on" is from the hub's position once it has one (a hub that was idle
        // finds it first): a client that has read `retry:` misses no later event.
        let last = match last {
            Some(last) => Some(last),
            None => match head.wait_for(Option::is_some).await {
                Ok(position) => *position,
                Err(_) => return,
            },
        };
        let retry = self.settings.retry.as_millis();
        if tx
            .send(Bytes::from(format!("retry: {retry}\n\n")))
            .await
            .is_err()
        {
            return;
        }
        let beat = self.settings.heartbeat;
        let mut next_beat = tokio::time::Instant::now() + beat;
        let mut last = last;
        // A position past every committed event was never given out by this database.
        if let Some(position) = last {
            let ahead = head.borrow().is_none_or(|horizon| position > horizon);
            if ahead {
                match self.store.settled_event_head().await {
                    Ok(newest) if position > newest => {
                        if tx.send(reset("unknown", newest)).await.is_err() {
                            return;
                        }
                        last = Some(newest);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "cannot read the newest event"),
                }
            }
        }
        loop {
            let horizon = *head.borrow_and_update();
            if let Some(horizon) = horizon {
                let position = *last.get_or_insert(horizon);
                if position < horizon {
                    let Some((moved, sent)) = self.catch_up(position, horizon, &wanted, &tx).await
                    else {
                        return;
                    };
                    if sent {
                        next_beat = tokio::time::Instant::now() + beat;
                    }
                    last = Some(moved);
                    continue;
                }
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                () = &mut closed => return,
                () = &mut revoked => return,
                () = tokio::time::sleep_until(next_beat) => {
                    if tx.send(Bytes::from_static(HEARTBEAT)).await.is_err() {
                        return;
                    }
                    next_beat = tokio::time::Instant::now() + beat;
                }
            }
        }
    }

    /// Resolves once viewer key `key` is no longer issued (looked for every heartbeat), so
    /// a revoked key stops reading a stream it opened before; never for `None` (the admin
    /// token, or no authentication: they change only with a restart, which ends streams).
    async fn revoked(&self, key: Option<ApiKeyId>) {
        let Some(key) = key else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(self.settings.heartbeat).await;
            match self.store.list_api_keys().await {
                Ok(keys) if !keys.iter().any(|k| k.id == key) => return,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "cannot check a stream's viewer key"),
            }
        }
    }

    /// Sends what follows `position` up to `horizon` (from the ring, or else from the
    /// store), as one write; returns the new position and whether anything was sent, or
    /// `None` when the stream is over.
    async fn catch_up(
        &self,
        position: u64,
        horizon: u64,
        wanted: &impl Fn(EventType) -> bool,
        tx: &mpsc::Sender<Bytes>,
    ) -> Option<(u64, bool)> {
        let mut chunk = BytesMut::new();
        let last = if let Some(frames) = self.recent(position) {
            let mut last = position;
            for frame in frames {
                last = frame.seq;
                if wanted(frame.kind) {
                    chunk.extend_from_slice(&frame.message);
                }
            }
            last.max(horizon)
        } else {
            let page = match self.store.events_between(position, horizon, BATCH).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read events for a stream");
                    let pause = self.settings.poll.max(Duration::from_millis(100));
                    tokio::time::sleep(pause).await;
                    return Some((position, false));
                }
            };
            if page.pruned_through > position {
                tx.send(reset("pruned", page.pruned_through)).await.ok()?;
                return Some((page.pruned_through, true));
            }
            for event in page.events.iter().filter(|e| wanted(e.kind)) {
                chunk.extend_from_slice(&Frame::from(event).message);
            }
            // Past the page; up to the horizon when only final gaps were left.
            page.events.last().map_or(horizon, |e| e.seq)
        };
        let sent = !chunk.is_empty();
        if sent {
            tx.send(chunk.freeze()).await.ok()?;
        }
        Some((last, sent))
    }
}
