//! Sending events to webhook endpoints, the Standard Webhooks way: every delivery carries
//! `webhook-id` (the event's id, the same on every attempt), `webhook-timestamp` and
//! `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`
//! under each live secret, space-separated), signed by the `standardwebhooks` crate.
//!
//! One task per endpoint that is on, in each process ([`spawn`] starts the one that starts
//! them). Each round an endpoint's task takes, unless another process holds it, a lease
//! over the endpoint's new events (up to the newest one no unit of work can still commit
//! before), sends them, a bounded number at once, and stores every first attempt with the
//! endpoint's new cursor in one unit of work. A failed attempt is due again on the retry
//! schedule (with jitter, or later when the answer's `Retry-After` asks); those are
//! claimed, each by one process, and sent by the endpoint's task the same way. A slow or
//! dead endpoint holds up only its own task. Only 2xx is success; 410 switches the endpoint off. Everything it knows is
//! in the database, so a restart loses nothing: a batch cut short is sent again
//! (receivers deduplicate by `webhook-id`). The order of deliveries to an endpoint is not
//! promised: attempts run concurrently, and retries come later.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use chrono::{DateTime, SubsecRound as _, Utc};
use crm_core::{
    Attempt, Attempted, Event, RetrySchedule, Store, WebhookId, WebhookSecrets, is_internal,
    subscribed,
};
use futures_util::{StreamExt, stream};
use rand::RngExt as _;
use tokio::sync::watch;

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whether endpoints may be loopback or private addresses (`CRM_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// The delays between attempts (`CRM_WEBHOOK_RETRY_SCHEDULE`).
    pub schedule: RetrySchedule,
    /// How long an attempt may take.
    pub timeout: Duration,
    /// How often new events and due retries are looked for.
    pub poll: Duration,
    /// Attempts in flight at once, per endpoint and for retries.
    pub concurrency: usize,
    /// New events read per lease of an endpoint (`CRM_WEBHOOK_BATCH`).
    pub batch: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            schedule: RetrySchedule::default(),
            timeout: Duration::from_secs(15),
            poll: Duration::from_millis(200),
            concurrency: 16,
            batch: 32,
        }
    }
}

/// No send of a batch (`WebhookSettings::batch` events read per lease) starts later than this
/// before its lease ends, beyond the request timeout: time to settle what was sent while the
/// lease still holds. A fast endpoint gets the whole batch per lease (two writer round
/// trips); a slow one what can be sent in time, and the rest in the next lease.
const LAUNCH_MARGIN: Duration = Duration::from_secs(5);
/// Due retries claimed at once, on the same reckoning.
const RETRIES: u32 = 32;
/// How long a lease or a claim holds before another process may take it over: also how
/// long an endpoint waits after a server died holding it.
const LEASE: Duration = Duration::from_secs(45);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A new secret: `whsec_` and 24 random bytes, base64 (what Standard Webhooks' libraries
/// take).
pub(crate) fn new_secret() -> String {
    let key: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The `webhook-signature` header: one `v1,…` per live secret, space-separated.
pub(crate) fn signature(secrets: &WebhookSecrets, id: &str, timestamp: i64, body: &[u8]) -> String {
    [Some(&secrets.current), secrets.previous.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|secret| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|key| key.sign(id, timestamp, body))
                .ok()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resolves an endpoint's name to its public addresses only (unless private ones are
/// allowed), so a name cannot lead the service into its own network.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| !is_internal(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Starts the sender over `store`, until `closing` turns true; `None` outside a runtime
/// (rendering the document) or when the HTTP client cannot be built.
pub(crate) fn spawn<S: Store>(
    store: Arc<S>,
    settings: WebhookSettings,
    closing: Option<watch::Receiver<bool>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let mut client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mini-crm/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_private {
        client = client.dns_resolver(Arc::new(PublicOnly));
    }
    let client = match client.build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook client; no webhook is sent");
            return None;
        }
    };
    let sender = Arc::new(Sender {
        store,
        settings,
        client,
    });
    Some(runtime.spawn(async move {
        tokio::select! {
            () = sender.run() => {}
            () = crate::closing::closed(closing) => {}
        }
    }))
}

/// What an endpoint's task knows between its rounds.
#[derive(Default)]
struct Progress {
    /// The newest event no unit of work can still commit before, as last looked for; looked
    /// for again only once a round has caught up with it (on PostgreSQL each look takes a
    /// transaction id).
    horizon: Option<u64>,
    /// Where this task last left the endpoint's cursor: while the horizon is no further,
    /// there is nothing new to lease (an idle endpoint's lease and settle were two commits,
    /// two fsyncs on SQLite, every poll). Another replica can only move the cursor on, so
    /// this is never ahead of it.
    cursor: Option<u64>,
    /// When due retries are next looked for (`None`: now): every poll, or at once while a
    /// claim came back full. Back-to-back rounds under load claim them no more often than
    /// that (each claim is a write).
    retries_at: Option<tokio::time::Instant>,
}

/// The endpoints' tasks, stopped with the sender (at shutdown).
#[derive(Default)]
struct Tasks(HashMap<WebhookId, tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

struct Sender<S> {
    store: Arc<S>,
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl<S: Store> Sender<S> {
    /// Keeps one task per endpoint that is on: every poll it looks for endpoints without
    /// one (new, or switched on again), so that a slow or dead endpoint holds up nobody else.
    async fn run(self: Arc<Self>) {
        let mut tasks = Tasks::default();
        loop {
            tasks.0.retain(|_, task| !task.is_finished());
            match self.store.list_webhooks().await {
                Ok(endpoints) => {
                    for endpoint in endpoints.iter().filter(|w| w.enabled) {
                        tasks.0.entry(endpoint.id).or_insert_with(|| {
                            tokio::spawn(Arc::clone(&self).endpoint(endpoint.id))
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err, "webhooks: cannot list endpoints"),
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// One endpoint's task, until it is switched off or deleted: rounds at once again
    /// while a round left work (a full batch or a full claim), a poll later otherwise.
    async fn endpoint(self: Arc<Self>, id: WebhookId) {
        let mut progress = Progress::default();
        // Whether the last round left work. A round of an endpoint switched off or deleted
        // meanwhile leases and claims nothing, so it is an idle one; the endpoint is read
        // after those only (back-to-back rounds under load read it no more).
        let mut busy = false;
        loop {
            if !busy {
                match self.store.get_webhook(id).await {
                    Ok(endpoint) if endpoint.enabled => {}
                    Ok(_) | Err(crm_core::StoreError::NotFound(_)) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, webhook = id.get(), "webhooks: cannot read")
                    }
                }
            }
            busy = match self.round(id, &mut progress).await {
                Ok(more) => more,
                Err(err) => {
                    tracing::warn!(error = %err, webhook = id.get(), "webhooks: a round failed");
                    false
                }
            };
            if busy {
                tokio::task::yield_now().await;
            } else {
                progress.horizon = None;
                tokio::time::sleep(self.settings.poll).await;
            }
        }
    }

    /// One round of endpoint `id`: its next batch up to the horizon (looked for when
    /// unknown) unless the cursor has reached it, then, when they are looked for, its
    /// retries that are due; whether either left more to do.
    async fn round(
        &self,
        id: WebhookId,
        progress: &mut Progress,
    ) -> Result<bool, crm_core::StoreError> {
        // New events up to where none can still commit before; held back (a long
        // transaction on PostgreSQL), the retries still go.
        if progress.horizon.is_none() {
            match self.store.settled_event_head().await {
                Ok(head) => progress.horizon = Some(head),
                Err(err) => tracing::debug!(error = %err, "webhooks: no new events this round"),
            }
        }
        let full = match progress.horizon {
            Some(horizon) if progress.cursor.is_none_or(|cursor| cursor < horizon) => {
                let (full, left_at) = self.batch(id, horizon).await?;
                // Unknown when another process held the lease: asked again next round.
                progress.cursor = left_at;
                full
            }
            _ => false,
        };
        let now = tokio::time::Instant::now();
        if progress.retries_at.is_some_and(|at| now < at) {
            return Ok(full);
        }
        let more = self.retries(id).await?;
        progress.retries_at = (!more).then(|| now + self.settings.poll);
        Ok(more || full)
    }

    /// When a lease or claim taken now ends (at the precision stored: settling compares it).
    fn lease_end(&self) -> DateTime<Utc> {
        (self.store.now() + chrono::Duration::from_std(LEASE).unwrap_or_default()).trunc_subsecs(6)
    }

    /// Sends endpoint `id`'s events up to `horizon`, if this process gets its lease;
    /// whether the batch was full (more events wait), and where it left the cursor.
    async fn batch(
        &self,
        id: WebhookId,
        horizon: u64,
    ) -> Result<(bool, Option<u64>), crm_core::StoreError> {
        let until = self.lease_end();
        let Some(lease) = self.store.lease_webhook(id, until).await? else {
            return Ok((false, None));
        };
        let from = lease.cursor;
        let batch = self.settings.batch.max(1);
        let page = if from < horizon {
            self.store.events_between(from, horizon, batch).await?
        } else {
            crm_core::EventPage::default()
        };
        if page.pruned_through > from {
            tracing::warn!(
                webhook = id.get(),
                from,
                pruned_through = page.pruned_through,
                "webhooks: events this endpoint had not received were pruned (it was off)"
            );
        }
        let full = page.events.len() == batch as usize;
        let read_through = match page.events.last() {
            Some(last) if full => last.seq,
            _ => horizon.max(from),
        };
        let wanted: Vec<Event> = page
            .events
            .into_iter()
            .filter(|e| subscribed(lease.event_types.as_ref(), e.kind))
            .collect();
        let (url, secrets) = (lease.url.as_str(), &lease.secrets);
        let concurrency = self.settings.concurrency.max(1);
        // A send that starts after this might still run when the lease ends; the first
        // `concurrency` always start, so every batch gets somewhere.
        let last_start = tokio::time::Instant::now()
            + LEASE.saturating_sub(self.settings.timeout + LAUNCH_MARGIN);
        let seqs: Vec<u64> = wanted.iter().map(|e| e.seq).collect();
        let sent: Vec<(u64, Attempt)> = stream::iter(wanted.into_iter().enumerate())
            .take_while(move |item: &(usize, Event)| {
                let may = item.0 < concurrency || tokio::time::Instant::now() <= last_start;
                std::future::ready(may)
            })
            .map(move |(_, event)| async move {
                let attempt = self.send(url, secrets, &event).await;
                (event.seq, attempt)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        // The sends started in order: those not started are the batch's tail, which the
        // cursor stays before, and the next lease goes on from.
        let (cursor, full) = match seqs.get(sent.len()) {
            Some(first_left) => (first_left - 1, true),
            None => (read_through, full),
        };
        let gone = sent.iter().any(|(_, a)| a.gone());
        let attempts = sent
            .into_iter()
            .map(|(seq, attempt)| self.outcome(seq, 1, &attempt))
            .collect();
        self.store
            .settle_webhook(id, until, cursor, attempts, gone)
            .await?;
        Ok((full, Some(cursor)))
    }

    /// Sends endpoint `id`'s retries that are due; whether it claimed as many as it could
    /// (more may be due).
    async fn retries(&self, id: WebhookId) -> Result<bool, crm_core::StoreError> {
        let until = self.lease_end();
        let due = self.store.claim_due_deliveries(id, until, RETRIES).await?;
        let full = due.len() == RETRIES as usize;
        let results = stream::iter(due)
            .map(|due| async move {
                let seq = due.event_seq;
                let page = self
                    .store
                    .events_between(seq.saturating_sub(1), seq, 1)
                    .await?;
                let attempt = match page.events.first() {
                    Some(event) => self.send(due.url.as_str(), &due.secrets, event).await,
                    None => Attempt::Failed {
                        status: None,
                        error: "the event was pruned".into(),
                        retry_after: None,
                    },
                };
                let gone = attempt.gone();
                let outcome = self.outcome(seq, due.attempts, &attempt);
                self.store
                    .record_attempt(due.id, until, outcome, gone)
                    .await
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        results
            .into_iter()
            .collect::<Result<(), _>>()
            .map(|()| full)
    }

    /// Where a delivery stands after its `attempts`-th attempt went as `attempt`.
    fn outcome(&self, seq: u64, attempts: u32, attempt: &Attempt) -> Attempted {
        let now = self.store.now();
        let jitter = rand::rng().random_range(0.0..1.0);
        let (state, next_attempt_at) = self.settings.schedule.after(attempts, attempt, now, jitter);
        let (status, error) = match attempt {
            Attempt::Delivered { status } => (Some(*status), None),
            Attempt::Failed { status, error, .. } => (*status, Some(error.clone())),
        };
        Attempted {
            event_seq: seq,
            state,
            next_attempt_at,
            status,
            error,
            at: now,
        }
    }

    /// One attempt: the envelope, signed; never to a URL the settings refuse now (one
    /// stored while internal addresses were allowed).
    async fn send(&self, url: &str, secrets: &WebhookSecrets, event: &Event) -> Attempt {
        if let Err(refused) = crm_core::WebhookUrl::parse(url, self.settings.allow_private) {
            return Attempt::Failed {
                status: None,
                error: refused.to_string(),
                retry_after: None,
            };
        }
        let body = event.envelope();
        let id = event.id();
        let timestamp = Utc::now().timestamp();
        let signature = signature(secrets, &id, timestamp, body.as_bytes());
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        match request.send().await {
            Ok(response) => {
                let retry_after = retry_after(response.headers());
                Attempt::answered(response.status().as_u16(), retry_after)
            }
            Err(err) => Attempt::Failed {
                status: None,
                error: describe(&err),
                retry_after: None,
            },
        }
    }
}

/// What went wrong, without the URL (it may carry credentials).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(err);
    let mut detail = String::new();
    while let Some(err) = cause {
        detail = err.to_string();
        cause = err.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The answer's `Retry-After`: seconds or an HTTP date, at most a day.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc);
            (at - Utc::now()).to_std().unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests;
