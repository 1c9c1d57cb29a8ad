//! Prometheus metrics, served at `/metrics`. Counters and histograms are updated as
//! requests pass; the per-operator and per-source gauges and the pool figures are read
//! from the store at scrape time, so they are never stale and forget deleted entities.
//!
//! Each [`crate::app`] has its own registry, so several apps in one process (the tests)
//! do not mix their figures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crm_core::{Contact, Store};
use poem::{
    Endpoint, Request, Response,
    http::{Method, StatusCode},
};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every series of the service.
pub(crate) struct Metrics {
    registry: Registry,
    registrations: IntCounterVec,
    registration_seconds: HistogramVec,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    operator_open: IntGaugeVec,
    operator_capacity: IntGaugeVec,
    backlog: IntGaugeVec,
    oldest_wait: GaugeVec,
    stale: IntGaugeVec,
    drain_seconds: Histogram,
    pool_connections: IntGaugeVec,
    pool_max: IntGauge,
    queued_writes: IntGauge,
    write_group_reruns: IntCounter,
    webhook_pending: IntGaugeVec,
    webhook_behind: IntGaugeVec,
    /// The store's rerun total at the last scrape: scrapes may run at once, so the
    /// counter is raised by what each one newly saw, never twice for the same reruns.
    reruns_seen: AtomicU64,
}

/// The methods counted under their own name; any other is counted as `other`.
static METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The `method` label of a request: HTTP lets a client send any token as a method, and
/// each distinct label value is a new series kept for the life of the process.
fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// Latency buckets from 100 µs to 10 s: registrations take well under a millisecond of
/// work but wait for a group commit.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

impl Metrics {
    /// A fresh registry with every series registered.
    ///
    /// # Panics
    /// Only if two series had the same name, which is a bug caught by any test.
    #[allow(clippy::expect_used)]
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        // Each series is registered where it is made.
        macro_rules! registered {
            ($metric:expr) => {{
                let metric = $metric.expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric names");
                metric
            }};
        }
        let registrations = registered!(IntCounterVec::new(
            Opts::new(
                "crm_registrations_total",
                "Contacts registered, by source and outcome",
            ),
            &["source_id", "outcome"],
        ));
        let registration_seconds = registered!(HistogramVec::new(
            HistogramOpts::new(
                "crm_registration_duration_seconds",
                "Time to register a contact, until it is durably stored",
            )
            .buckets(BUCKETS.to_vec()),
            &[],
        ));
        let http_requests = registered!(IntCounterVec::new(
            Opts::new(
                "crm_http_requests_total",
                "HTTP requests, by method (`other` for an unknown one), route template \
                 (`unmatched` when no route matched) and status",
            ),
            &["method", "route", "status"],
        ));
        let http_seconds = registered!(HistogramVec::new(
            HistogramOpts::new("crm_http_request_duration_seconds", "HTTP request latency")
                .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        ));
        let operator_open = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_operator_open_contacts",
                "Open contacts assigned to each operator",
            ),
            &["operator_id"],
        ));
        let operator_capacity = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_operator_capacity",
                "Each operator's limit of open contacts",
            ),
            &["operator_id"],
        ));
        let backlog = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_unassigned_backlog",
                "Contacts waiting for an operator (open, none assigned), per source",
            ),
            &["source_id"],
        ));
        let stale = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_queue_stale_contacts",
                "Contacts waiting longer than CRM_QUEUE_MAX_WAIT, per source (set when it is)",
            ),
            &["source_id"],
        ));
        let oldest_wait = registered!(GaugeVec::new(
            Opts::new(
                "crm_queue_oldest_wait_seconds",
                "How long the oldest waiting contact has waited, per source with any",
            ),
            &["source_id"],
        ));
        let drain_seconds = registered!(Histogram::with_opts(
            HistogramOpts::new(
                "crm_queue_drain_latency_seconds",
                "For each waiting contact a drain assigned: from the commit that freed \
                 capacity (or the start of a sweep) until its assignment was written",
            )
            .buckets(BUCKETS.to_vec()),
        ));
        let pool_connections = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        ));
        let pool_max = registered!(IntGauge::new(
            "crm_db_pool_max_connections",
            "Database pool limit"
        ));
        let queued_writes = registered!(IntGauge::new(
            "crm_db_queued_writes",
            "Writes waiting for the SQLite writer (0 on PostgreSQL)",
        ));
        let write_group_reruns = registered!(IntCounter::new(
            "crm_db_write_group_reruns_total",
            "Groups of writes the SQLite writer ran twice because one failed after writing",
        ));
        let webhook_pending = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_webhook_pending_deliveries",
                "Deliveries waiting for a retry, per webhook endpoint that is on",
            ),
            &["webhook_id"],
        ));
        let webhook_behind = registered!(IntGaugeVec::new(
            Opts::new(
                "crm_webhook_events_behind",
                "Events not attempted yet, per webhook endpoint that is on",
            ),
            &["webhook_id"],
        ));
        Self {
            registry,
            registrations,
            registration_seconds,
            http_requests,
            http_seconds,
            operator_open,
            operator_capacity,
            backlog,
            oldest_wait,
            stale,
            drain_seconds,
            pool_connections,
            pool_max,
            queued_writes,
            write_group_reruns,
            webhook_pending,
            webhook_behind,
            reruns_seen: AtomicU64::new(0),
        }
    }

    /// Counts a stored contact and how long storing it took.
    pub(crate) fn registered(&self, contact: &Contact, took: Duration) {
        let outcome = if contact.operator.is_some() {
            "assigned"
        } else {
            "unassigned"
        };
        self.registrations
            .with_label_values(&[&contact.source_id.to_string(), outcome])
            .inc();
        self.registration_seconds
            .with_label_values(&[] as &[&str])
            .observe(took.as_secs_f64());
    }

    /// Counts an answered HTTP request. Every label comes from a closed set, so that no
    /// caller can add series: the method is one of [`METHODS`] or `other`, the route is a
    /// template of the route table or `unmatched` (never the path), and the status is one
    /// the server chose to answer.
    pub(crate) fn http(&self, method: &Method, route: &str, status: StatusCode, took: Duration) {
        let method = method_label(method);
        self.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_seconds
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// Refreshes the gauges from `store` and renders everything in the text format.
    async fn render<S: Store>(
        &self,
        store: &S,
        settings: crate::QueueSettings,
    ) -> Result<String, crm_core::StoreError> {
        // Both read counters or an index, never the contacts table: a scrape costs the
        // same with a million contacts as with none (docs/operations.md).
        let loads = store.operator_loads().await?;
        let now = chrono::Utc::now();
        let queue = store.queue(settings.stale_before(now)).await?;
        self.operator_open.reset();
        self.operator_capacity.reset();
        for op in loads {
            let id = op.operator_id.to_string();
            self.operator_open
                .with_label_values(&[&id])
                .set(op.open_contacts);
            self.operator_capacity
                .with_label_values(&[&id])
                .set(op.max_active_contacts.get());
        }
        self.backlog.reset();
        self.oldest_wait.reset();
        self.stale.reset();
        for q in queue {
            let source = q.source_id.to_string();
            self.backlog.with_label_values(&[&source]).set(q.waiting);
            self.oldest_wait
                .with_label_values(&[&source])
                .set((now - q.oldest_since).num_milliseconds().max(0) as f64 / 1000.0);
            if settings.max_wait.is_some() {
                self.stale.with_label_values(&[&source]).set(q.stale);
            }
        }
        // A partial index and one row per endpoint: cheap, as the rest.
        self.webhook_pending.reset();
        self.webhook_behind.reset();
        for hook in store.webhook_backlog().await? {
            let id = hook.webhook_id.to_string();
            self.webhook_pending
                .with_label_values(&[&id])
                .set(hook.pending);
            self.webhook_behind
                .with_label_values(&[&id])
                .set(hook.behind);
        }
        // Noted by the store as drains ran, taken here once.
        for latency in store.take_drain_latencies() {
            self.drain_seconds.observe(latency.as_secs_f64());
        }
        let pool = store.pool_status();
        let busy = pool.connections.saturating_sub(pool.idle);
        self.pool_connections
            .with_label_values(&["active"])
            .set(i64::from(busy));
        self.pool_connections
            .with_label_values(&["idle"])
            .set(i64::from(pool.idle));
        self.pool_max.set(i64::from(pool.max_connections));
        self.queued_writes
            .set(i64::try_from(pool.queued_writes.unwrap_or(0)).unwrap_or(i64::MAX));
        // The store keeps the total; the counter catches up with it.
        let reruns = pool.write_group_reruns.unwrap_or(0);
        let seen = self.reruns_seen.fetch_max(reruns, Ordering::Relaxed);
        if reruns > seen {
            self.write_group_reruns.inc_by(reruns - seen);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|err| crm_core::StoreError::Internal(Box::new(err)))?;
        String::from_utf8(out).map_err(|err| crm_core::StoreError::Internal(Box::new(err)))
    }
}

/// `GET /metrics`.
pub(crate) struct MetricsEndpoint<S> {
    pub(crate) store: Arc<S>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) queue: crate::QueueSettings,
}

impl<S: Store> Endpoint for MetricsEndpoint<S> {
    type Output = Response;

    /// Routed with `poem::get`, so only GET and HEAD reach it.
    async fn call(&self, _: Request) -> poem::Result<Response> {
        match self.metrics.render(self.store.as_ref(), self.queue).await {
            Ok(text) => Ok(Response::builder()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(text)),
            Err(err) => Err(crate::error::ApiError::from(err).into()),
        }
    }
}
