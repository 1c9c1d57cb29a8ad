//! The realistic scenario's view of the waiting queue: the largest backlog while the load
//! ran (`GET /api/queue`, polled), and the drain latency the servers measured (their
//! `crm_queue_drain_latency_seconds` histograms in `/metrics`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use hyper::Method;

use crate::http::Connection;

/// How often the queue is looked at. Each look counts every waiting contact (tens of
/// thousands in the realistic scenario): at 10 a second it cost the server ~5 µs per
/// registration and the scenario ~5 % of its rate, load the baseline (which has no queue
/// to show) never carried. The largest backlog needs no finer grain.
const POLL: Duration = Duration::from_secs(1);

/// The most contacts waiting at once, over every source, until `stop` is set; `None` when
/// the server has no queue to show (a build from before it, run with `--server-exe`).
pub async fn largest_backlog(target: SocketAddr, stop: Arc<AtomicBool>) -> Option<i64> {
    let mut conn = Connection::new(target);
    let mut largest = 0;
    while !stop.load(Ordering::Relaxed) {
        match crate::backlog::waiting(&mut conn).await {
            Ok(waiting) => largest = largest.max(waiting),
            Err(err) => {
                eprintln!("bench: no queue to watch ({err:#})");
                return None;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Some(largest)
}

/// The drain latency over every server: how many contacts were drained, and the upper
/// bounds of the histogram buckets holding the median and the 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrainLatency {
    pub drained: u64,
    pub p50_at_most: f64,
    pub p99_at_most: f64,
}

/// Reads and merges the servers' drain latency histograms.
pub async fn drain_latency(targets: &[SocketAddr]) -> Result<Option<DrainLatency>> {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for &target in targets {
        let answer = Connection::new(target)
            .send(Method::GET, "/metrics", None)
            .await
            .context("GET /metrics")?;
        let text = String::from_utf8_lossy(&answer.body);
        for (le, count) in histogram(&text, "crm_queue_drain_latency_seconds") {
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, total)) => *total += count,
                None => buckets.push((le, count)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let drained = buckets.last().map_or(0, |(_, n)| *n);
    if drained == 0 {
        return Ok(None);
    }
    let at_most = |q: f64| {
        let rank = (q * drained as f64).ceil() as u64;
        buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    Ok(Some(DrainLatency {
        drained,
        p50_at_most: at_most(0.5),
        p99_at_most: at_most(0.99),
    }))
}

/// The cumulative buckets `(le, count)` of histogram `name` in Prometheus' text format.
fn histogram(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

impl DrainLatency {
    /// One line for the report and the CSV's free-text column.
    pub fn summary(&self) -> String {
        let ms = |s: f64| {
            if s.is_finite() {
                format!("≤ {} ms", s * 1000.0)
            } else {
                "> 10 s".to_owned()
            }
        };
        format!(
            "drain latency p50 {}, p99 {} over {} drained",
            ms(self.p50_at_most),
            ms(self.p99_at_most),
            self.drained
        )
    }
}
