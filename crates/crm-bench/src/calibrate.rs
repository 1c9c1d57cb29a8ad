//! `--calibrate`: how fast this machine serves HTTP in the same minutes as a run.
//!
//! The project machine is not always the same host, and one host's speed moves by ±15 %
//! within an hour (docs/benchmarks.md), so a registration rate alone cannot be compared
//! with a figure taken elsewhere or earlier. Before and after the run the harness fires
//! the same load (same concurrency, same bodies) at a bare poem-openapi server that
//! parses each registration and answers a contact-shaped 201 with no database: the
//! ceiling of the HTTP stack on this machine now. The run's rate over that ceiling is
//! comparable across hosts; the issue's own figures were ~80,000 /s for such a server
//! under wrk and a target of 25,000 registrations/s.
//!
//! The server is the running executable itself (xtask, which links this crate), started
//! as `xtask bench --calibration-server` with `CRM_BIND`, so it builds with the harness and
//! costs no second build.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use poem::{Route, listener::TcpListener};
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService, payload::Json};
use serde_json::Value;
use tokio::signal::unix::SignalKind;

use crate::{
    cli::{Scenario, Settings},
    load::{self, Plan, Shared},
    scenario::{Bodies, Seeded, Source},
    server::{Launch, Server},
};

/// The hidden `cargo xtask bench` argument that runs the calibration server.
pub const SERVER_TASK: &str = "--calibration-server";

/// Warm-up and measured window of each calibration.
const WARMUP: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(4);

/// `xtask bench --calibration-server`: serves on `CRM_BIND` until SIGTERM, then exits
/// cleanly (the harness stops its servers so and checks how they exited).
pub fn serve() -> Result<()> {
    let bind = std::env::var("CRM_BIND").context("CRM_BIND is not set")?;
    // As crm-api: tokio's multi-threaded runtime with a worker per core.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let api = OpenApiService::new(Api, "calibration", "1");
            let app = Route::new().nest("/", api);
            let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
            poem::Server::new(TcpListener::bind(bind))
                .run_with_graceful_shutdown(
                    app,
                    async move {
                        terminate.recv().await;
                    },
                    Some(Duration::from_secs(1)),
                )
                .await
                .context("calibration server")
        })
}

/// Fires `settings`' load at a fresh calibration server for a few seconds; returns its
/// requests per second.
pub async fn measure(settings: &Settings, log_file: &Path) -> Result<f64> {
    // This very executable, even when cargo has replaced its file since it started (the
    // smoke run's `cargo test --no-run` relinks xtask): Linux keeps the running image
    // reachable as /proc/self/exe.
    let exe = match Path::new("/proc/self/exe") {
        proc if proc.exists() => proc.to_owned(),
        _ => std::env::current_exe().context("the xtask executable")?,
    };
    let launch = Launch {
        exe,
        args: vec!["bench".to_owned(), SERVER_TASK.to_owned()],
        database_url: String::new(),
        log: "warn".to_owned(),
        pool: None,
        sqlite_sync_normal: false,
    };
    let mut server = Server::start(&launch, log_file)?;
    server.wait_healthy().await?;
    let seeded = Seeded {
        operators: Vec::new(),
        sources: vec![Source {
            id: 1,
            code: "bot".to_owned(),
            weights: Vec::new(),
        }],
    };
    let (warmup, duration) = if settings.smoke {
        (Duration::ZERO, Duration::from_secs(1))
    } else {
        (WARMUP, WINDOW)
    };
    let plan = Plan {
        targets: vec![server.addr()],
        warmup,
        duration,
        max_requests: u64::MAX,
        open_contacts: None,
    };
    let bodies = (0..settings.concurrency)
        .map(|worker| Bodies::new(worker, &seeded, Scenario::Default, settings.keys))
        .collect();
    let outcome = load::run(&plan, bodies, Arc::new(Shared::default())).await?;
    server.stop()?;
    if outcome.errors > 0 || !outcome.non_2xx.is_empty() {
        anyhow::bail!(
            "the calibration server failed requests: {} errors, non-2xx {:?}",
            outcome.errors,
            outcome.non_2xx
        );
    }
    Ok(outcome.answered as f64 / outcome.window.as_secs_f64())
}

/// A registration as crm-api accepts it (the fields the harness sends).
#[derive(Object)]
struct NewContact {
    external_lead_id: String,
    source_id: Option<i64>,
    source_code: Option<String>,
    payload: Option<Value>,
}

#[derive(Object)]
struct Operator {
    id: i64,
    name: String,
    is_active: bool,
}

/// The shape of crm-api's 201.
#[derive(Object)]
struct Contact {
    id: i64,
    lead_id: i64,
    source_id: i64,
    operator_id: Option<i64>,
    operator: Option<Operator>,
    status: String,
    payload: Value,
    created_at: chrono::DateTime<chrono::Utc>,
    closed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(ApiResponse)]
enum Created {
    #[oai(status = 201)]
    Created(Json<Contact>),
}

struct Api;

#[OpenApi]
impl Api {
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Value> {
        Json(serde_json::json!({"status": "ok"}))
    }

    #[oai(path = "/api/contacts", method = "post")]
    async fn register(&self, body: Json<NewContact>) -> Created {
        let new = body.0;
        let lead_id = i64::try_from(new.external_lead_id.len()).unwrap_or(0);
        Created::Created(Json(Contact {
            id: lead_id,
            lead_id,
            source_id: new.source_id.unwrap_or(1),
            operator_id: Some(3),
            operator: Some(Operator {
                id: 3,
                name: new.source_code.unwrap_or_else(|| "Operator 3".to_owned()),
                is_active: true,
            }),
            status: "open".to_owned(),
            payload: new.payload.unwrap_or(Value::Null),
            created_at: chrono::Utc::now(),
            closed_at: None,
        }))
    }
}
