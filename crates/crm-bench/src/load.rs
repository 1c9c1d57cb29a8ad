//! The load generator: a fixed number of workers, each with one keep-alive connection per
//! server, sending registrations back to back (a closed loop, like wrk) through a warm-up
//! and then a measured window, bounded in time and in request count.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    http::{Connection, REQUEST_TIMEOUT},
    scenario::{Bodies, OpenContacts},
};

/// Latencies in microseconds, 1 µs to 60 s, in an HDR histogram: constant memory and
/// cost per sample, 3 significant digits, and the workers' histograms merge exactly,
/// which sorting millions of samples would not beat.
pub type Latencies = Histogram<u64>;

/// An empty latency histogram.
pub fn new_latencies() -> Result<Latencies> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// What to fire, where, and for how long.
pub struct Plan {
    /// The servers; each worker sends its requests to them in turn.
    pub targets: Vec<SocketAddr>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Measured requests after which the run stops early.
    pub max_requests: u64,
    /// Set when the scenario closes contacts: assigned contacts are remembered here.
    pub open_contacts: Option<Arc<OpenContacts>>,
}

/// What the measured window saw.
pub struct Outcome {
    /// Latency of every answer completed in the window, in microseconds.
    pub latencies: Latencies,
    /// Answers (any status) completed in the window.
    pub answered: u64,
    /// The window's length: the duration, or less when `max_requests` ended it.
    pub window: Duration,
    /// Answers outside 2xx in the window, by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests in the window that got no answer (connection failure, timeout).
    pub errors: u64,
    pub first_error: Option<String>,
    /// 201s in the window whose contact got an operator, and those that did not.
    pub assigned: u64,
    pub unassigned: u64,
    /// Every 201, warm-up included.
    pub registered_total: u64,
}

/// Counters the workers share with the progress bar and the closer.
#[derive(Default)]
pub struct Shared {
    pub stop: Arc<AtomicBool>,
    /// 201s so far, warm-up included (the closer's pace).
    pub registered: Arc<AtomicU64>,
    measured: AtomicU64,
    /// Nanoseconds from the window's start to the answer that reached `max_requests`.
    capped_at: Mutex<Option<Duration>>,
}

#[derive(Clone, Copy)]
struct Clock {
    measure_from: Instant,
    end: Instant,
}

/// Runs the plan with one worker per `Bodies`, with a progress bar on the terminal.
pub async fn run(plan: &Plan, bodies: Vec<Bodies>, shared: Arc<Shared>) -> Result<Outcome> {
    let start = Instant::now();
    let clock = Clock {
        measure_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    };
    let progress = progress_bar(plan, clock, Arc::clone(&shared));
    let empty = new_latencies()?;
    let common = Arc::new(Common {
        targets: plan.targets.clone(),
        clock,
        max_requests: plan.max_requests,
        open_contacts: plan.open_contacts.clone(),
        shared: Arc::clone(&shared),
    });
    let workers: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(index, bodies)| {
            tokio::spawn(worker(index, empty.clone(), bodies, Arc::clone(&common)))
        })
        .collect();
    let mut outcome = Outcome {
        latencies: empty,
        answered: 0,
        window: plan.duration,
        non_2xx: BTreeMap::new(),
        errors: 0,
        first_error: None,
        assigned: 0,
        unassigned: 0,
        registered_total: 0,
    };
    // In-flight requests finish within REQUEST_TIMEOUT of the end; nothing waits longer.
    let deadline = tokio::time::Instant::from_std(clock.end) + REQUEST_TIMEOUT * 2;
    for handle in workers {
        let abort = handle.abort_handle();
        let tally = match tokio::time::timeout_at(deadline, handle).await {
            Ok(joined) => joined.context("a load worker panicked")?,
            Err(_) => {
                abort.abort();
                anyhow::bail!("a load worker did not stop in time");
            }
        };
        outcome.latencies.add(&tally.latencies)?;
        outcome.answered += tally.answered;
        outcome.errors += tally.errors;
        outcome.assigned += tally.assigned;
        outcome.unassigned += tally.unassigned;
        for (status, n) in tally.non_2xx {
            *outcome.non_2xx.entry(status).or_default() += n;
        }
        if outcome.first_error.is_none() {
            outcome.first_error = tally.first_error;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    progress.finish_and_clear();
    if let Ok(capped) = shared.capped_at.lock()
        && let Some(window) = *capped
    {
        outcome.window = window;
    }
    outcome.registered_total = shared.registered.load(Ordering::Relaxed);
    Ok(outcome)
}

/// One worker's counts, merged into the [`Outcome`] at the end (no shared histogram
/// to contend on while measuring).
struct Tally {
    latencies: Latencies,
    answered: u64,
    non_2xx: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    assigned: u64,
    unassigned: u64,
}

/// What every worker reads.
struct Common {
    targets: Vec<SocketAddr>,
    clock: Clock,
    max_requests: u64,
    open_contacts: Option<Arc<OpenContacts>>,
    shared: Arc<Shared>,
}

async fn worker(
    index: usize,
    latencies: Latencies,
    mut bodies: Bodies,
    common: Arc<Common>,
) -> Tally {
    let Common {
        targets,
        clock,
        max_requests,
        open_contacts,
        shared,
    } = &*common;
    let (clock, max_requests) = (*clock, *max_requests);
    let mut conns: Vec<Connection> = targets.iter().copied().map(Connection::new).collect();
    let mut tally = Tally {
        latencies,
        answered: 0,
        non_2xx: BTreeMap::new(),
        errors: 0,
        first_error: None,
        assigned: 0,
        unassigned: 0,
    };
    // Workers start on different servers, then take them in turn: round-robin per request.
    let mut turn = index;
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < clock.end {
        let registration = bodies.next_registration();
        let target = turn % conns.len();
        let conn = &mut conns[target];
        turn += 1;
        let sent = Instant::now();
        let key = registration.key.as_deref().map(|k| ("idempotency-key", k));
        let result = conn
            .send_with(Method::POST, "/api/contacts", Some(registration.body), key)
            .await;
        let done = Instant::now();
        let measured = done >= clock.measure_from && done < clock.end;
        if measured {
            let n = shared.measured.fetch_add(1, Ordering::Relaxed) + 1;
            if n == max_requests {
                shared.stop.store(true, Ordering::Relaxed);
                if let Ok(mut capped) = shared.capped_at.lock() {
                    *capped = Some(done - clock.measure_from);
                }
            }
        }
        let answer = match result {
            Ok(answer) => answer,
            Err(err) => {
                if measured {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| format!("{err:#}"));
                }
                // A refused connection fails at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if answer.status == 201 {
            shared.registered.fetch_add(1, Ordering::Relaxed);
        }
        let assigned = answer.status == 201 && !contains(&answer.body, br#""operator_id":null"#);
        if assigned
            && let Some(open) = &open_contacts
            && let Some(id) = answer.json().ok().and_then(|c| c["id"].as_i64())
        {
            open.push(id);
        }
        if !measured {
            continue;
        }
        tally.answered += 1;
        let micros = u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX);
        tally.latencies.saturating_record(micros.max(1));
        if (200..300).contains(&answer.status) {
            if assigned {
                tally.assigned += 1;
            } else if answer.status == 201 {
                tally.unassigned += 1;
            }
        } else {
            *tally.non_2xx.entry(answer.status).or_default() += 1;
        }
    }
    tally
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A bar over warm-up plus duration showing the current rate; hidden when stderr is not
/// a terminal (CI).
fn progress_bar(plan: &Plan, clock: Clock, shared: Arc<Shared>) -> ProgressBar {
    let total = plan.warmup + plan.duration;
    let bar = ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {elapsed:>4} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = bar.clone();
    tokio::spawn(async move {
        let start = clock.end - total;
        let mut last = (Instant::now(), shared.registered.load(Ordering::Relaxed));
        while !shared.stop.load(Ordering::Relaxed) && !ticker.is_finished() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let registered = shared.registered.load(Ordering::Relaxed);
            let rate = (registered - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, registered);
            let phase = if now < clock.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            ticker.set_position(u64::try_from((now - start).as_millis()).unwrap_or(0));
            ticker.set_message(format!("{phase}: {rate:>8.0} registrations/s"));
        }
    });
    bar
}
