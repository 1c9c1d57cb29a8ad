//! What each scenario seeds, the registrations it fires, the closer of the realistic
//! scenario, and the counter check after it.

use std::{
    collections::{HashSet, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::{
    cli::{Keys, Scenario, Settings, SourceStrategy},
    http::Connection,
};

/// An operator as seeded.
#[derive(Debug, Clone)]
pub struct Operator {
    pub id: i64,
    pub max_active_contacts: i64,
}

/// A source as seeded, with its operators' weights.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: i64,
    pub code: String,
    /// `(index into Seeded::operators, weight)`.
    pub weights: Vec<(usize, i64)>,
}

/// Everything seeded before the run.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub operators: Vec<Operator>,
    pub sources: Vec<Source>,
}

/// Creates the scenario's operators, sources and weights through the API.
pub async fn seed(conn: &mut Connection, settings: &Settings) -> Result<Seeded> {
    let scenario = settings.scenario;
    // (capacity, …) per operator and, per source, which operators with which weight.
    let (capacities, layout): (Vec<i64>, Vec<Vec<(usize, i64)>>) = match scenario {
        // 10 operators of capacity 2,000 on one source, weights 1..10 (switched off below).
        Scenario::Backlog => (
            vec![2_000; 10],
            vec![
                (0..10)
                    .map(|i| (i, i64::try_from(i).unwrap_or(0) + 1))
                    .collect(),
            ],
        ),
        // 10 operators of capacity 1,000,000 on one source, weights 1..10.
        Scenario::Default => (
            vec![1_000_000; 10],
            vec![
                (0..10)
                    .map(|i| (i, i64::try_from(i).unwrap_or(0) + 1))
                    .collect(),
            ],
        ),
        // 20 operators of capacity 5..50; each on two of three sources, weights 1..10.
        Scenario::Realistic => (
            (0..20).map(|i| 5 + i * 45 / 19).collect(),
            (0..3)
                .map(|s| {
                    (0..20usize)
                        .filter(|i| i % 3 != s)
                        .map(|i| (i, i64::try_from((i * 7 + s * 3) % 10).unwrap_or(0) + 1))
                        .collect()
                })
                .collect(),
        ),
    };
    let mut operators = Vec::new();
    for (i, capacity) in capacities.into_iter().enumerate() {
        let created = conn
            .call(
                Method::POST,
                "/api/operators",
                Some(&json!({
                    "name": format!("Operator {}", i + 1),
                    "is_active": scenario != Scenario::Backlog,
                    "max_active_contacts": capacity,
                })),
            )
            .await?;
        operators.push(Operator {
            id: created["id"].as_i64().context("operator id")?,
            max_active_contacts: capacity,
        });
    }
    let codes = ["web", "tg", "wa"];
    let mut sources = Vec::new();
    for (s, weights) in layout.into_iter().enumerate() {
        let code = codes.get(s).copied().unwrap_or("src").to_owned();
        let mut body = json!({"name": format!("Source {code}"), "code": code});
        if settings.strategy != SourceStrategy::WeightedRandom {
            body["strategy"] = settings.strategy.name().into();
        }
        if settings.sticky {
            body["sticky_owner"] = true.into();
        }
        let created = conn.call(Method::POST, "/api/sources", Some(&body)).await?;
        let id = created["id"].as_i64().context("source id")?;
        let body: Vec<Value> = weights
            .iter()
            .map(|&(op, weight)| json!({"operator_id": operators[op].id, "weight": weight}))
            .collect();
        conn.call(
            Method::PUT,
            &format!("/api/sources/{id}/operators"),
            Some(&json!({ "operators": body })),
        )
        .await?;
        sources.push(Source { id, code, weights });
    }
    Ok(Seeded { operators, sources })
}

/// The registrations one load-generator worker sends: every other one from a new lead,
/// the rest from a lead this worker registered before.
pub struct Bodies {
    worker: usize,
    new_leads: u64,
    sent: u64,
    rng: u64,
    /// `(id, code)` of the sources to spread over.
    sources: Vec<(i64, String)>,
    realistic: bool,
    keys: Keys,
}

/// One registration to send.
pub struct Registration {
    pub body: Bytes,
    /// Its `Idempotency-Key`, if it carries one.
    pub key: Option<String>,
}

impl Bodies {
    /// The bodies of worker `worker`.
    pub fn new(worker: usize, seeded: &Seeded, scenario: Scenario, keys: Keys) -> Self {
        Self {
            worker,
            new_leads: 0,
            sent: 0,
            // Any odd, worker-specific seed: xorshift needs a non-zero state.
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((worker as u64) << 1 | 1),
            sources: seeded
                .sources
                .iter()
                .map(|s| (s.id, s.code.clone()))
                .collect(),
            realistic: scenario == Scenario::Realistic,
            keys,
        }
    }

    /// The next registration: its body and, as `--idempotency` asks, a key of its own.
    pub fn next_registration(&mut self) -> Registration {
        let body = self.next_body();
        let keyed = match self.keys {
            Keys::None => false,
            // Keys on new and returning leads alike.
            Keys::Half => self.sent % 4 < 2,
            Keys::All => true,
        };
        Registration {
            body,
            key: keyed.then(|| format!("bench-{}-{}", self.worker, self.sent)),
        }
    }

    /// The next `POST /api/contacts` body.
    fn next_body(&mut self) -> Bytes {
        self.sent += 1;
        let lead = if self.sent % 2 == 1 || self.new_leads == 0 {
            self.new_leads += 1;
            self.new_leads - 1
        } else {
            self.random() % self.new_leads
        };
        let worker = self.worker;
        if self.realistic {
            let pick = self.random();
            let (id, code) =
                &self.sources[usize::try_from(pick % 3).unwrap_or(0) % self.sources.len()];
            let source = if pick & 8 == 0 {
                format!("\"source_id\":{id}")
            } else {
                format!("\"source_code\":\"{code}\"")
            };
            Bytes::from(format!(
                "{{\"external_lead_id\":\"w{worker}-{lead}\",{source},\
                 \"payload\":{{\"text\":\"hello, I need help with my order\",\"n\":{lead}}}}}"
            ))
        } else {
            let id = self.sources[0].0;
            Bytes::from(format!(
                "{{\"external_lead_id\":\"w{worker}-{lead}\",\"source_id\":{id},\
                 \"payload\":\"hello from the benchmark\"}}"
            ))
        }
    }

    /// xorshift64: the harness only needs cheap, varied numbers, not good ones.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// Contacts known to be assigned, oldest first, for the closer: those the load generator
/// saw assigned in a 201, and those the closer finds assigned later (drained from the
/// waiting queue after their 201 said they wait).
#[derive(Default)]
pub struct OpenContacts(Mutex<Known>);

#[derive(Default)]
struct Known {
    queue: VecDeque<i64>,
    /// Every id ever queued, so none is closed twice.
    seen: HashSet<i64>,
}

impl OpenContacts {
    /// Remembers an assigned contact (once); whether it was new.
    pub fn push(&self, id: i64) -> bool {
        let Ok(mut known) = self.0.lock() else {
            return false;
        };
        let new = known.seen.insert(id);
        if new {
            known.queue.push_back(id);
        }
        new
    }

    fn pop(&self) -> Option<i64> {
        self.0.lock().ok()?.queue.pop_front()
    }
}

/// Finds open contacts of `operator` that got it after their 201 (drained from the queue),
/// oldest first, from `GET /api/contacts?status=open&operator_id=…` (at most its limit, a
/// few dozen); whether any was new.
async fn learn_drained(conn: &mut Connection, open: &OpenContacts, operator: i64) -> bool {
    let path = format!("/api/contacts?status=open&operator_id={operator}&limit=1000");
    let Ok(answer) = conn.send(Method::GET, &path, None).await else {
        return false;
    };
    let Ok(Value::Array(contacts)) = answer.json() else {
        return false;
    };
    let mut any = false;
    for contact in &contacts {
        if let (Some(id), false) = (contact["id"].as_i64(), contact["operator_id"].is_null()) {
            any |= open.push(id);
        }
    }
    any
}

/// What the closer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Closed {
    pub ok: u64,
    pub failed: u64,
}

/// Closers running side by side: one sequential closer cannot keep up with a tenth of
/// tens of thousands of registrations per second.
pub const CLOSERS: u64 = 8;

/// One of [`CLOSERS`] closers: closes assigned contacts, oldest first, keeping its share
/// of the closes at about a tenth of the registrations so far (`registered`), until
/// `stop` is set.
pub async fn closer(
    targets: Vec<SocketAddr>,
    operators: Vec<i64>,
    open: Arc<OpenContacts>,
    registered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Closed {
    let mut conns: Vec<Connection> = targets.into_iter().map(Connection::new).collect();
    let mut closed = Closed::default();
    let mut turn = 0usize;
    // Whose open contacts to look through next for drained ones.
    let mut look = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let due = registered.load(Ordering::Relaxed) / 10 / CLOSERS;
        let id = if closed.ok + closed.failed < due {
            open.pop()
        } else {
            None
        };
        let Some(id) = id else {
            // Closes are due but none is known: some may have been drained since.
            if closed.ok + closed.failed < due && !operators.is_empty() {
                look += 1;
                let operator = operators[look % operators.len()];
                if learn_drained(&mut conns[0], &open, operator).await {
                    continue;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        turn += 1;
        let target = turn % conns.len();
        let conn = &mut conns[target];
        match conn
            .send(Method::POST, &format!("/api/contacts/{id}/close"), None)
            .await
        {
            Ok(answer) if answer.status == 200 => closed.ok += 1,
            _ => closed.failed += 1,
        }
    }
    closed
}

/// The result of comparing each operator's counter with its open rows.
#[derive(Debug, Default)]
pub struct CounterCheck {
    pub operators: usize,
    pub open_rows: u64,
    pub problems: Vec<String>,
}

/// Reads every operator's counter (`/api/stats/operators`) and its open contacts
/// (`/api/contacts?status=open&operator_id=…`, every page) and reports any counter that
/// differs from its rows or exceeds its limit.
pub async fn check_counters(conn: &mut Connection) -> Result<CounterCheck> {
    let stats = conn.call(Method::GET, "/api/stats/operators", None).await?;
    let mut check = CounterCheck::default();
    for op in stats.as_array().context("stats is a list")? {
        let id = op["operator_id"].as_i64().context("operator_id")?;
        let counter = op["open_contacts"].as_i64().context("open_contacts")?;
        let limit = op["max_active_contacts"]
            .as_i64()
            .context("max_active_contacts")?;
        let rows = count_open(conn, id).await?;
        check.operators += 1;
        check.open_rows += rows;
        if u64::try_from(counter).ok() != Some(rows) {
            check.problems.push(format!(
                "operator {id}: counter {counter}, open rows {rows}"
            ));
        }
        if counter > limit {
            check.problems.push(format!(
                "operator {id}: counter {counter} over its limit {limit}"
            ));
        }
    }
    Ok(check)
}

async fn count_open(conn: &mut Connection, operator: i64) -> Result<u64> {
    let mut count = 0;
    let mut after = 0;
    loop {
        let page = conn
            .call(
                Method::GET,
                &format!(
                    "/api/contacts?status=open&operator_id={operator}&limit=1000&after={after}"
                ),
                None,
            )
            .await?;
        let items = page.as_array().context("contacts is a list")?;
        let Some(last) = items.last() else {
            return Ok(count);
        };
        count += items.len() as u64;
        after = last["id"].as_i64().context("contact id")?;
    }
}

/// The sticky hit rate over the run, from every source's distribution report (its last 24
/// hours, which hold the whole run): returning leads that went back to their owner against
/// those whose owner was passed over (an owner whose weight was removed is not counted).
pub async fn sticky_hit_rate(conn: &mut Connection) -> Result<String> {
    let sources = conn.call(Method::GET, "/api/sources", None).await?;
    let (mut hits, mut missed) = (0, 0);
    for source in sources.as_array().context("a list of sources")? {
        let id = source["id"].as_i64().context("source id")?;
        let report = conn
            .call(
                Method::GET,
                &format!("/api/sources/{id}/distribution"),
                None,
            )
            .await?;
        for operator in report["operators"].as_array().context("operators")? {
            hits += operator["sticky"].as_u64().context("sticky")?;
            missed += operator["sticky_missed"]
                .as_u64()
                .context("sticky_missed")?;
        }
    }
    let returning = hits + missed;
    Ok(if returning == 0 {
        "sticky hit rate: no returning lead with an owner".to_owned()
    } else {
        format!(
            "sticky hit rate {:.1} % ({hits} of {returning} returning leads with an owner)",
            hits as f64 * 100.0 / returning as f64
        )
    })
}
