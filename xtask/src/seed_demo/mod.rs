//! `cargo xtask seed-demo [--url URL]`: a realistic demo data set, created through the
//! public HTTP API of a running server, so it works on either backend and every value
//! goes through the same validation as a client's.
//!
//! Six operators with varied limits (one on leave), three sources with weights, and a
//! few hundred contacts from new and returning leads. Contacts are closed as the day
//! goes on, so at the end some are closed, some open, and some, mostly from the source
//! whose operators are scarce, wait unassigned; a supervisor raises one operator's limit
//! (the queue drains to him) and hands a few of those out by hand. Daria, with few places
//! on two sources, is often full: `GET /api/sources/{id}/distribution` shows it, and the
//! closing lines say where. The plan is fixed by a seed; which operator gets
//! a contact is the server's draw.
//!
//! Then, unless `--once`, it goes on as a live day (`live.rs`) until Ctrl-C, so the
//! supervisor's page at `/` shows contacts arrive, wait and be drained.

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::api_client::Api;

mod live;
mod rng;
mod smoke;
use rng::SplitMix64;
pub use smoke::smoke;

/// Where `cargo xtask serve` listens.
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

#[derive(clap::Args)]
pub struct Options {
    /// The server to fill.
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// Seed and stop; without it, contacts keep arriving and closing until Ctrl-C.
    #[arg(long)]
    once: bool,
}

/// The seed of the plan: the same leads, sources and messages on every run.
const SEED: u64 = 0x6d69_6e69_2d63_726d;

/// How many contacts the demo registers.
const REGISTRATIONS: usize = 320;

/// The last contacts of the day arrive with nobody closing anything, so some operators
/// end full and the backlog grows.
const RUSH: usize = 100;

/// The operator (index into [`OPERATORS`]) who takes more at the end of the day.
const SUPERVISOR_PICK: usize = 4;

/// An operator to create.
struct OperatorSpec {
    name: &'static str,
    max_active_contacts: u32,
    is_active: bool,
}

/// A source to create, with its operators' weights by index into [`OPERATORS`].
struct SourceSpec {
    name: &'static str,
    code: &'static str,
    /// Share of the registrations that come through this source, in percent.
    share: usize,
    weights: &'static [(usize, u32)],
}

const OPERATORS: [OperatorSpec; 6] = [
    OperatorSpec {
        name: "Anna Petrova",
        max_active_contacts: 25,
        is_active: true,
    },
    OperatorSpec {
        name: "Boris Ivanov",
        max_active_contacts: 15,
        is_active: true,
    },
    OperatorSpec {
        name: "Chen Wei",
        max_active_contacts: 10,
        is_active: true,
    },
    OperatorSpec {
        name: "Daria Kowalska",
        max_active_contacts: 6,
        is_active: true,
    },
    OperatorSpec {
        name: "Emeka Obi",
        max_active_contacts: 30,
        is_active: true,
    },
    // On leave: keeps her weights, takes nothing.
    OperatorSpec {
        name: "Farida Nazarova",
        max_active_contacts: 8,
        is_active: false,
    },
];

const SOURCES: [SourceSpec; 3] = [
    SourceSpec {
        name: "Telegram bot",
        code: "tg",
        share: 50,
        weights: &[(0, 40), (1, 30), (2, 20), (4, 10)],
    },
    SourceSpec {
        name: "Website chat",
        code: "web",
        share: 35,
        weights: &[(4, 50), (0, 20), (3, 20), (5, 10)],
    },
    // Few hands: its contacts pile up unassigned once Daria is full.
    SourceSpec {
        name: "WhatsApp Business",
        code: "wa",
        share: 15,
        weights: &[(3, 30), (5, 70)],
    },
];

const MESSAGES: [&str; 10] = [
    "Hi! Is the annual plan still discounted?",
    "My order #{n} has not arrived yet",
    "Can I change the delivery address?",
    "How do I reset my password?",
    "Do you ship to Kazakhstan?",
    "I was charged twice for order #{n}",
    "Can someone call me back today?",
    "Is there a student discount?",
    "The app crashes when I open my cart",
    "Thanks, that solved it!",
];

const PAGES: [&str; 5] = ["/", "/pricing", "/checkout", "/help/delivery", "/account"];

/// One contact to register.
#[derive(Debug, Clone, PartialEq)]
struct Registration {
    /// Index into [`SOURCES`].
    source: usize,
    /// The lead's identifier as its channel sends it (Telegram sends numbers).
    external_lead_id: Value,
    /// The lead wrote before.
    returning: bool,
    payload: Value,
}

pub fn run(options: &Options) -> Result<()> {
    let token = std::env::var("CRM_ADMIN_TOKEN").ok();
    let api = Api::new(options.url.trim_end_matches('/').to_owned(), token);
    api.check_reachable()?;
    match seed(&api) {
        Err(err) if options.once || err.downcast_ref::<AlreadySeeded>().is_none() => {
            return Err(err);
        }
        Err(already) => println!("{already}; going on with the live day"),
        Ok(()) if options.once => return Ok(()),
        Ok(()) => {}
    }
    live::run(&api)
}

/// The database already holds the demo's sources: the server and the codes found.
#[derive(Debug)]
struct AlreadySeeded(String, String);

impl std::fmt::Display for AlreadySeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} already has the demo sources ({})", self.0, self.1)
    }
}

impl std::error::Error for AlreadySeeded {}

/// Creates the operators and sources, then registers, closes and assigns contacts.
fn seed(api: &Api) -> Result<()> {
    let taken: Vec<String> = api
        .send("GET", "/api/sources", None)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["code"].as_str().map(str::to_owned))
        .filter(|code| SOURCES.iter().any(|s| s.code == code))
        .collect();
    if !taken.is_empty() {
        return Err(AlreadySeeded(api.base.clone(), taken.join(", ")).into());
    }

    let mut operators = Vec::new();
    for spec in &OPERATORS {
        let body = json!({
            "name": spec.name,
            "max_active_contacts": spec.max_active_contacts,
            "is_active": spec.is_active,
        });
        operators.push(id(&api.send("POST", "/api/operators", Some(&body))?)?);
    }
    let mut sources = Vec::new();
    for spec in &SOURCES {
        let body = json!({ "name": spec.name, "code": spec.code });
        let source = id(&api.send("POST", "/api/sources", Some(&body))?)?;
        let weights: Vec<Value> = spec
            .weights
            .iter()
            .map(|&(op, weight)| json!({ "operator_id": operators[op], "weight": weight }))
            .collect();
        let body = json!({ "operators": weights });
        api.send(
            "PUT",
            &format!("/api/sources/{source}/operators"),
            Some(&body),
        )?;
        sources.push(source);
    }

    let mut rng = SplitMix64(SEED);
    let plan = plan(&mut rng, REGISTRATIONS);
    let mut tally = Tally::default();
    // Open contacts that got an operator when they came: the ones operators close (those
    // the queue hands out later stay open, as a backlog's do on a busy day).
    let mut open: Vec<i64> = Vec::new();
    for (i, reg) in plan.iter().enumerate() {
        let contact = api.send("POST", "/api/contacts", Some(&reg.body()))?;
        let contact_id = id(&contact)?;
        tally.registered += 1;
        tally.returning += usize::from(reg.returning);
        if !contact["operator_id"].is_null() {
            open.push(contact_id);
        }
        // Operators work through their queues: every few contacts about half of the
        // open ones get closed, until the rush at the end of the day.
        if i % 8 == 7 && i < REGISTRATIONS - RUSH {
            let mut still_open = Vec::with_capacity(open.len());
            for contact_id in open.drain(..) {
                if rng.below(100) < 50 {
                    api.send("POST", &format!("/api/contacts/{contact_id}/close"), None)?;
                    tally.closed += 1;
                } else {
                    still_open.push(contact_id);
                }
            }
            open = still_open;
        }
    }

    // A supervisor lets the most experienced operator take more: the queue hands him the
    // oldest waiting contacts of his sources at once.
    let helper = operators[SUPERVISOR_PICK];
    let raised = OPERATORS[SUPERVISOR_PICK].max_active_contacts + 10;
    let before = waiting(api)?.len();
    let body = json!({ "max_active_contacts": raised });
    api.send("PATCH", &format!("/api/operators/{helper}"), Some(&body))?;
    let drained = before - waiting(api)?.len();
    // Then hands a few of the oldest still waiting to whoever has room: the queue gives a
    // source's contacts only to that source's operators, a person may choose anyone.
    let mut by_hand = 0;
    for contact_id in waiting(api)?.into_iter().take(3) {
        let Some(operator) = roomiest(api)? else {
            break;
        };
        let body = json!({ "operator_id": operator });
        api.send(
            "POST",
            &format!("/api/contacts/{contact_id}/assign"),
            Some(&body),
        )?;
        by_hand += 1;
    }

    let busiest = busiest(api, &sources, &operators)?;
    let leads = plan.iter().filter(|r| !r.returning).count();
    let open = api
        .send("GET", "/api/contacts?status=open&limit=1000", None)?
        .as_array()
        .map_or(0, Vec::len);
    let still_waiting = waiting(api)?.len();
    println!(
        "seeded {}: {} operators, {} sources, {} contacts from {leads} leads ({} from \
         returning leads); {} closed, {} open of which {still_waiting} wait for an operator; \
         raising {}'s limit drained {drained} from the queue, {by_hand} more were assigned \
         by hand",
        api.base,
        operators.len(),
        sources.len(),
        tally.registered,
        tally.returning,
        tally.closed,
        open,
        OPERATORS[SUPERVISOR_PICK].name,
    );
    println!("{busiest}");
    Ok(())
}

/// The waiting contacts, oldest first.
fn waiting(api: &Api) -> Result<Vec<i64>> {
    Ok(api
        .send(
            "GET",
            "/api/contacts?status=open&unassigned=true&limit=1000",
            None,
        )?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_i64())
        .collect())
}

/// The active operator with the most room, if anyone has room.
fn roomiest(api: &Api) -> Result<Option<i64>> {
    Ok(api
        .send("GET", "/api/operators?is_active=true", None)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let room = o["max_active_contacts"].as_i64()? - o["active_contacts"].as_i64()?;
            (room > 0).then_some((room, o["id"].as_i64()?))
        })
        .max()
        .map(|(_, id)| id))
}

/// What `/api/sources/{id}/distribution` shows on the demo day: for each source, the
/// operator it most often found full, as one line each.
fn busiest(api: &Api, sources: &[i64], operators: &[i64]) -> Result<String> {
    let mut lines = Vec::new();
    for (spec, source) in SOURCES.iter().zip(sources) {
        let report = api.send("GET", &format!("/api/sources/{source}/distribution"), None)?;
        let full = report["operators"]
            .as_array()
            .into_iter()
            .flatten()
            .max_by(|a, b| {
                let share = |o: &Value| o["at_capacity_share"].as_f64().unwrap_or(0.0);
                share(a).total_cmp(&share(b))
            });
        if let Some(o) = full {
            let name = operators
                .iter()
                .position(|id| o["operator_id"] == *id)
                .map_or("?", |i| OPERATORS[i].name);
            lines.push(format!(
                "  {}: {} decisions, {name} at capacity in {:.0} % of them \
                 (assigned {}, expected {:.1}) — GET /api/sources/{source}/distribution",
                spec.code,
                report["decisions"],
                o["at_capacity_share"].as_f64().unwrap_or(0.0) * 100.0,
                o["assigned"],
                o["expected"].as_f64().unwrap_or(0.0),
            ));
        }
    }
    Ok(format!(
        "who was full most often, per source:\n{}",
        lines.join("\n")
    ))
}

impl Registration {
    /// Its `POST /api/contacts` body.
    fn body(&self) -> Value {
        json!({
            "external_lead_id": self.external_lead_id,
            "source_code": SOURCES[self.source].code,
            "payload": self.payload,
        })
    }
}

/// What was done, for the closing line.
#[derive(Debug, Default)]
struct Tally {
    registered: usize,
    returning: usize,
    closed: usize,
}

/// The registrations of the demo day, in order: new leads with identifiers in their
/// channel's style, and returning leads who write again, through any source.
fn plan(rng: &mut SplitMix64, count: usize) -> Vec<Registration> {
    let mut leads: Vec<Value> = Vec::new();
    let mut plan = Vec::with_capacity(count);
    for n in 0..count {
        let source = pick_source(rng.below(100));
        let returning = !leads.is_empty() && rng.below(100) < 35;
        let external_lead_id = if returning {
            rng.pick(&leads).clone()
        } else {
            let id = new_lead_id(source, rng);
            leads.push(id.clone());
            id
        };
        let text = rng
            .pick(&MESSAGES)
            .replace("{n}", &(100_000 + rng.below(900_000)).to_string());
        let payload = match SOURCES[source].code {
            "web" => json!({
                "text": text,
                "page": rng.pick(&PAGES),
            }),
            "tg" => json!({ "text": text, "message_id": 5_000 + n }),
            _ => json!({ "text": text }),
        };
        plan.push(Registration {
            source,
            external_lead_id,
            returning,
            payload,
        });
    }
    plan
}

/// The source whose cumulative share first exceeds `percent` (0..100).
fn pick_source(percent: usize) -> usize {
    let mut cumulative = 0;
    for (i, source) in SOURCES.iter().enumerate() {
        cumulative += source.share;
        if percent < cumulative {
            return i;
        }
    }
    SOURCES.len() - 1
}

/// A new lead's identifier as its first channel knows it: a Telegram user id (a JSON
/// number), a website session, or a phone number.
fn new_lead_id(source: usize, rng: &mut SplitMix64) -> Value {
    match SOURCES[source].code {
        "tg" => json!(100_000_000 + rng.next() % 900_000_000),
        "web" => json!(format!("web-{:012x}", rng.next() >> 16)),
        _ => json!(format!("+4915{:09}", rng.next() % 1_000_000_000)),
    }
}

/// The `id` of a created entity.
fn id(entity: &Value) -> Result<i64> {
    entity["id"]
        .as_i64()
        .with_context(|| format!("no id in the answer {entity}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_fixed_by_the_seed() {
        assert_eq!(
            plan(&mut SplitMix64(SEED), REGISTRATIONS),
            plan(&mut SplitMix64(SEED), REGISTRATIONS)
        );
    }

    #[test]
    fn the_plan_mixes_sources_and_new_and_returning_leads() {
        let plan = plan(&mut SplitMix64(SEED), REGISTRATIONS);
        assert_eq!(plan.len(), REGISTRATIONS);
        let returning = plan.iter().filter(|r| r.returning).count();
        assert!((70..=150).contains(&returning), "{returning} returning");
        for (i, source) in SOURCES.iter().enumerate() {
            let n = plan.iter().filter(|r| r.source == i).count();
            assert!(n >= 20, "{n} contacts through {}", source.code);
        }
        // Telegram identifiers are numbers, as the messenger sends them.
        assert!(
            plan.iter()
                .filter(|r| !r.returning && SOURCES[r.source].code == "tg")
                .all(|r| r.external_lead_id.is_u64())
        );
    }

    #[test]
    fn every_weight_names_an_operator_and_some_operator_is_off() {
        for source in &SOURCES {
            assert!(
                source
                    .weights
                    .iter()
                    .all(|&(op, w)| op < OPERATORS.len() && w > 0)
            );
        }
        assert!(OPERATORS.iter().any(|o| !o.is_active));
        assert_eq!(SOURCES.iter().map(|s| s.share).sum::<usize>(), 100);
    }
}
