//! `--subscribers N`: N clients of `GET /api/events` while the load runs, as a supervisor's
//! page or an integration would hold them. Each notes, for every event it receives, the
//! time since the event's `timestamp` (when its unit of work ran on the server, on the
//! same machine's clock): the delivery latency the Events issue sets a goal for.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use memchr::memmem;
use tokio::net::TcpStream;

/// What the streams received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub streams: usize,
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Delivery {
    /// One line for the report.
    pub fn summary(&self) -> String {
        format!(
            "{} events to {} streams, delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.events, self.streams, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Starts `n` streams on `target`; they read until `stop` is set. Each answers its
/// histogram of latencies (µs).
pub async fn start(
    target: SocketAddr,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<tokio::task::JoinHandle<Result<Histogram<u64>>>>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let body = open(target).await?;
        streams.push(tokio::spawn(read(body, Arc::clone(stop))));
    }
    Ok(streams)
}

/// Merges what the streams received.
pub async fn finish(
    streams: Vec<tokio::task::JoinHandle<Result<Histogram<u64>>>>,
) -> Result<Option<Delivery>> {
    let count = streams.len();
    let mut all = Histogram::<u64>::new(3)?;
    for stream in streams {
        all.add(stream.await.context("a stream panicked")??)?;
    }
    if count == 0 {
        return Ok(None);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Some(Delivery {
        streams: count,
        events: all.len(),
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        max_ms: ms(all.max()),
    }))
}

async fn open(target: SocketAddr) -> Result<hyper::body::Incoming> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect to {target}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("handshake")?;
    tokio::spawn(connection);
    let request = Request::get("/api/events")
        .header(header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .context("GET /api/events")?;
    if !response.status().is_success() {
        bail!("GET /api/events answered {}", response.status());
    }
    Ok(response.into_body())
}

async fn read(mut body: hyper::body::Incoming, stop: Arc<AtomicBool>) -> Result<Histogram<u64>> {
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut pending = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let frame = match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(frame)) => frame.context("reading the stream")?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let received = Utc::now();
        pending.extend_from_slice(&data);
        let mut start = 0;
        while let Some(end) = memmem::find(&pending[start..], b"\n\n") {
            let message = &pending[start..start + end];
            if let Some(written) = timestamp(message) {
                let us = (received - written).num_microseconds().unwrap_or(0).max(0);
                latencies.record(us.unsigned_abs())?;
            }
            start += end + 2;
        }
        pending.drain(..start);
    }
    Ok(latencies)
}

/// The envelope's `timestamp` in one message, if it is an event (found, not parsed as
/// JSON: the streams carry tens of thousands of events a second into this process).
fn timestamp(message: &[u8]) -> Option<DateTime<Utc>> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let at = memmem::find(message, KEY)? + KEY.len();
    let len = memchr::memchr(b'"', &message[at..])?;
    std::str::from_utf8(&message[at..at + len])
        .ok()?
        .parse()
        .ok()
}

/// `--webhook`: a receiver in this process that answers every delivery 204 and counts
/// them, registered as a webhook endpoint (all types) of the first server before the load.
pub struct WebhookReceiver {
    received: Arc<std::sync::atomic::AtomicU64>,
}

impl WebhookReceiver {
    /// Starts the receiver and registers it with the server at `target` (which must allow
    /// loopback endpoints: the bench starts servers with `CRM_WEBHOOK_ALLOW_PRIVATE`).
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let port = crate::server::free_port()?;
        let counter = Arc::clone(&received);
        let endpoint = poem::endpoint::make(move |_req: poem::Request| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                poem::http::StatusCode::NO_CONTENT
            }
        });
        let listener = poem::listener::TcpListener::bind(format!("127.0.0.1:{port}"));
        tokio::spawn(poem::Server::new(listener).run(endpoint));
        let url = format!("http://127.0.0.1:{port}/hook");
        crate::http::Connection::new(target)
            .call(
                hyper::Method::POST,
                "/api/webhooks",
                Some(&serde_json::json!({ "url": url })),
            )
            .await
            .context("register the webhook endpoint (a server from before webhooks?)")?;
        Ok(Self { received })
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        format!(
            "{} deliveries received by one endpoint",
            self.received.load(Ordering::Relaxed)
        )
    }
}
