//! The run's figures: rates, latency percentiles, failures, memory, CPU and calibration,
//! as printed and as stored in the CSV.

use std::{collections::BTreeMap, time::Duration};

use crate::{cli::Settings, cpu::Usage, load::Outcome, scenario::Closed};

/// The figures of one run, as printed and as stored in the CSV.
#[derive(Debug, Clone)]
pub struct Figures {
    pub requests: u64,
    pub window: Duration,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub non_2xx: u64,
    pub non_2xx_by_status: BTreeMap<u16, u64>,
    pub first_error: Option<String>,
    pub assigned: u64,
    pub unassigned: u64,
    /// Every 201, warm-up included (the denominator of the CPU figures).
    pub registered_total: u64,
    /// The closer's closes (realistic scenario).
    pub closed: Option<Closed>,
    /// Peak RSS of the largest replica and of all replicas together, KiB.
    pub rss_max_kib: u64,
    pub rss_sum_kib: u64,
    /// The scenario's check after the load (the `counters` column of the CSV): the counter
    /// check's verdict (realistic), or what switching the operators on did (backlog).
    pub counters: Option<String>,
    /// The most contacts waiting at once while the load ran (realistic scenario).
    pub largest_backlog: Option<i64>,
    /// What the event streams received (`--subscribers`).
    pub events: Option<String>,
    /// The 1-minute load average just before the load started.
    pub load_before: String,
    /// The bare HTTP server's rate before and after the run (`--calibrate`).
    pub calibration: Option<Calibration>,
    /// CPU used during warm-up and measurement by the servers (by thread), PostgreSQL
    /// and this load generator (closers included).
    pub cpu: Usage,
}

impl Figures {
    /// Figures from the load generator's outcome, the servers' peak RSS and the CPU used.
    pub fn new(
        outcome: &Outcome,
        rss_kib: &[u64],
        closed: Option<Closed>,
        load_before: String,
        cpu: Usage,
    ) -> Self {
        let ms = |q: f64| outcome.latencies.value_at_quantile(q) as f64 / 1000.0;
        let window = outcome.window;
        Self {
            requests: outcome.answered,
            window,
            per_sec: outcome.answered as f64 / window.as_secs_f64().max(1e-9),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: outcome.latencies.max() as f64 / 1000.0,
            errors: outcome.errors,
            non_2xx: outcome.non_2xx.values().sum(),
            non_2xx_by_status: outcome.non_2xx.clone(),
            first_error: outcome.first_error.clone(),
            assigned: outcome.assigned,
            unassigned: outcome.unassigned,
            registered_total: outcome.registered_total,
            closed,
            rss_max_kib: rss_kib.iter().copied().max().unwrap_or(0),
            rss_sum_kib: rss_kib.iter().sum(),
            counters: None,
            largest_backlog: None,
            events: None,
            load_before,
            calibration: None,
            cpu,
        }
    }

    /// Zero transport errors and only 2xx answers.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.non_2xx == 0 && self.closed.is_none_or(|c| c.failed == 0)
    }

    /// Prints the figures for a person.
    pub fn print(&self, settings: &Settings) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!();
        println!("command:   {}", settings.command);
        println!(
            "backend:   {} ({} scenario), {}",
            settings.backend.name(),
            settings.scenario.name(),
            settings.describe()
        );
        println!(
            "requests:  {} in {:.2} s = {:.0} registrations/s",
            self.requests,
            self.window.as_secs_f64(),
            self.per_sec
        );
        println!(
            "latency:   p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        );
        let statuses: Vec<String> = self
            .non_2xx_by_status
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        println!(
            "failures:  {} errors, {} non-2xx{}",
            self.errors,
            self.non_2xx,
            if statuses.is_empty() {
                String::new()
            } else {
                format!(" ({})", statuses.join(", "))
            }
        );
        if let Some(err) = &self.first_error {
            println!("           first error: {err}");
        }
        println!(
            "contacts:  {} assigned, {} unassigned (201s in the window)",
            self.assigned, self.unassigned
        );
        if let Some(closed) = self.closed {
            println!(
                "closer:    {} closed, {} failed (whole run)",
                closed.ok, closed.failed
            );
        }
        if let Some(events) = &self.events {
            println!("events:    {events} (whole run)");
        }
        println!(
            "server:    peak RSS {:.1} MiB{}",
            mib(self.rss_max_kib),
            if settings.replicas > 1 {
                format!(
                    " (largest replica; {:.1} MiB over {} replicas)",
                    mib(self.rss_sum_kib),
                    settings.replicas
                )
            } else {
                String::new()
            }
        );
        let registered = self.registered_total.max(1) as f64;
        println!(
            "cpu:       server {:.1} s ({:.0} µs per registration), load generator {:.1} s \
             ({:.0} µs per registration), warm-up included",
            self.cpu.server(),
            self.cpu.server() * 1e6 / registered,
            self.cpu.generator,
            self.cpu.generator * 1e6 / registered
        );
        let threads: Vec<String> = self
            .cpu
            .threads
            .iter()
            .filter(|(_, s)| **s >= 0.05)
            .map(|(name, s)| {
                format!(
                    "{name} {s:.1} s ({:.0} µs, {:.0}% of the time)",
                    s * 1e6 / registered,
                    s * 100.0 / self.cpu.span.max(1e-9)
                )
            })
            .collect();
        if threads.is_empty() {
            // A short run (the smoke test) leaves every thread under the 0.05 s shown.
            println!("threads:   none above 0.05 s of CPU");
        } else {
            println!("threads:   {}", threads.join(", "));
        }
        if let Some(db) = self.cpu.database {
            println!(
                "database:  PostgreSQL {db:.1} s ({:.0} µs per registration)",
                db * 1e6 / registered
            );
        }
        println!(
            "machine:   load average {} before the run (2 cores: above ~0.5 means other work)",
            self.load_before
        );
        if let Some(c) = &self.calibration {
            println!(
                "calibration: a bare poem-openapi server, same load: {:.0} /s before, {:.0} after; \
                 this run is {:.3} of their mean",
                c.before,
                c.after,
                c.ratio(self.per_sec)
            );
        }
        match &self.counters {
            Some(backlog) if backlog.starts_with("backlog") => println!("{backlog}"),
            Some(counters) => println!("counters:  {counters}"),
            None => {}
        }
    }
}

/// The calibration figures of one run, for the report.
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    pub before: f64,
    pub after: f64,
}

impl Calibration {
    /// The run's rate over the mean of the two calibrations.
    pub fn ratio(&self, rate: f64) -> f64 {
        rate / ((self.before + self.after) / 2.0)
    }
}
