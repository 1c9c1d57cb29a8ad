//! The HTTP load test of contact registration behind `cargo xtask bench`: it builds
//! crm-api, starts it on a fresh database (SQLite, or a throwaway PostgreSQL with fsync on,
//! with one or more replicas), seeds a scenario, optionally preloads contacts, fires
//! `POST /api/contacts` at a fixed concurrency, prints the figures and appends them to a
//! CSV file. Everything it starts is stopped again, also on failure (drop guards). It talks
//! HTTP to a server process and links none of the workspace's crates.
//!
//! One module per concern, each importing only those listed before it: `cli` (options),
//! `http` (the client), `server` (build and child process), `scenario` (seed, bodies,
//! closer, counter check), `postgres` (the throwaway cluster, which `cargo xtask test`
//! uses too), `preload` (bulk SQL), `load` (the generator and its latency histogram),
//! `cpu` (CPU accounting from /proc), `stats` (the figures), `csv` (the results file),
//! `calibrate` (the bare server the run is compared with).

mod backlog;
mod calibrate;
mod cli;
mod cpu;
mod csv;
mod http;
mod load;
pub mod postgres;
mod preload;
mod queue_watch;
mod reports;
mod scenario;
mod server;
mod stats;
mod subscribers;

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use self::{
    cli::{Backend, Scenario, Settings},
    http::Connection,
    load::{Plan, Shared},
    postgres::{Durability, Postgres},
    scenario::{Bodies, OpenContacts},
    server::{Launch, Server},
    stats::Figures,
};

/// `cargo xtask bench [OPTIONS]`, run from the workspace at `root`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some(calibrate::SERVER_TASK) {
        return calibrate::serve();
    }
    let settings = cli::parse(args)?;
    if cfg!(debug_assertions) && !settings.smoke {
        return rerun_optimised(root, args);
    }
    let (exe, repo) = match &settings.server_exe {
        Some(exe) => {
            let exe = std::fs::canonicalize(exe)
                .with_context(|| format!("no crm-api executable at {}", exe.display()))?;
            let repo = exe
                .parent()
                .map_or_else(|| root.to_owned(), Path::to_path_buf);
            (exe, repo)
        }
        None => (
            server::build(root, &server::build_args(settings.release))?,
            root.to_owned(),
        ),
    };
    bench(&settings, &exe, root, &repo)
}

/// Runs this same command from an optimised build of xtask: unoptimised, the load
/// generator itself costs about 25 µs of CPU per request (measured), which the server
/// would lose on a 2-core machine. The smoke run stays on the debug build.
fn rerun_optimised(root: &Path, args: &[String]) -> Result<()> {
    eprintln!("bench: running the load generator from an optimised build of xtask");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
        .args(args)
        .status()
        .context("run cargo run --release -p xtask")?;
    if !status.success() {
        bail!("cargo xtask bench failed ({status})");
    }
    Ok(())
}

/// The smoke runs `cargo xtask test` ends with: every scenario on a debug build, a few
/// hundred requests each, results in a temporary file; fails on any error. `cargo_args`
/// build the server: the test run's own `cargo test … --no-run` reuses what the tests
/// built instead of building crm-api again with other features.
pub fn smoke(root: &Path, cargo_args: &[String]) -> Result<()> {
    let exe = server::build(root, cargo_args)?;
    for args in [
        &["--smoke", "--calibrate"][..],
        &["--smoke", "--scenario", "realistic", "--preload", "20000"][..],
        &["--smoke", "--scenario", "backlog"][..],
    ] {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let settings = cli::parse(&args)?;
        bench(&settings, &exe, root, root)
            .with_context(|| format!("bench smoke run failed: {}", settings.command))?;
    }
    Ok(())
}

/// One whole run: database, servers, seed, preload, load, checks, report. `repo` is the
/// git work tree the executable was built from (its commit goes into the CSV).
fn bench(settings: &Settings, exe: &Path, root: &Path, repo: &Path) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("crm-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    // Declared before the servers, so it is dropped (stopped) after them.
    let postgres = match settings.backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            Postgres::start_with(Durability::Full)
                .context("cannot start a throwaway PostgreSQL for the benchmark")?,
        ),
    };
    let sqlite_file = dir.path().join("bench.db");
    let database_url = match &postgres {
        Some(pg) => pg.url(),
        None => format!("sqlite://{}?mode=rwc", sqlite_file.display()),
    };
    let launch = Launch {
        exe: exe.to_owned(),
        args: Vec::new(),
        database_url: database_url.clone(),
        log: settings.log.clone(),
        pool: settings.pool,
        sqlite_sync_normal: settings.sqlite_sync_normal,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let log_file = |i: usize| dir.path().join(format!("crm-api-{i}.log"));
        let calibration_log = dir.path().join("calibration.log");
        let before = if settings.calibrate {
            Some(calibrate::measure(settings, &calibration_log).await?)
        } else {
            None
        };
        let mut first = Server::start(&launch, &log_file(0))?;
        first.wait_healthy().await?;
        let seeded = scenario::seed(&mut Connection::new(first.addr()), settings).await?;
        let mut servers = Vec::new();
        if settings.preload > 0 {
            // Bulk SQL while no server runs: the SQLite writer must be alone on its file.
            first.stop()?;
            eprintln!("bench: preloading {} contacts", settings.preload);
            let started = std::time::Instant::now();
            let done = match &postgres {
                Some(_) => preload::postgres(&database_url, &seeded, settings.preload)?,
                None => preload::sqlite(&sqlite_file, &seeded, settings.preload)?,
            };
            eprintln!(
                "bench: preloaded {} contacts ({} open) of {} leads in {:.1} s",
                done.contacts,
                done.open,
                done.leads,
                started.elapsed().as_secs_f64()
            );
        } else {
            servers.push(first);
        }
        while servers.len() < settings.replicas {
            servers.push(Server::start(&launch, &log_file(servers.len()))?);
        }
        for server in &mut servers {
            server.wait_healthy().await?;
        }

        let postgres_pid = postgres.as_ref().map(Postgres::pid).transpose()?;
        let figures = fire(settings, &servers, &seeded, postgres_pid).await?;
        if settings.reports {
            println!(
                "reports:   {}",
                reports::time(servers[0].addr(), &seeded).await?
            );
        }
        let mut figures = finish(settings, servers, figures).await?;
        if let Some(before) = before {
            let after = calibrate::measure(settings, &calibration_log).await?;
            figures.calibration = Some(stats::Calibration { before, after });
        }
        report(settings, root, repo, &figures, dir.path())
    })
}

/// The measured load, with the closers of the realistic scenario beside it.
async fn fire(
    settings: &Settings,
    servers: &[Server],
    seeded: &scenario::Seeded,
    postgres_pid: Option<u32>,
) -> Result<Figures> {
    let targets: Vec<_> = servers.iter().map(Server::addr).collect();
    let realistic = settings.scenario == Scenario::Realistic;
    let open = realistic.then(|| Arc::new(OpenContacts::default()));
    let plan = Plan {
        targets: targets.clone(),
        warmup: Duration::from_secs(settings.warmup_secs),
        duration: Duration::from_secs(settings.duration_secs),
        max_requests: settings.max_requests,
        open_contacts: open.clone(),
    };
    let shared = Arc::new(Shared::default());
    let closers: Vec<_> = match &open {
        Some(open) => (0..scenario::CLOSERS)
            .map(|closer| {
                // Each closer starts looking through a different operator's contacts.
                let mut operators: Vec<i64> = seeded.operators.iter().map(|o| o.id).collect();
                let start = closer as usize % operators.len().max(1);
                operators.rotate_left(start);
                tokio::spawn(scenario::closer(
                    targets.clone(),
                    operators,
                    Arc::clone(open),
                    Arc::clone(&shared.registered),
                    Arc::clone(&shared.stop),
                ))
            })
            .collect(),
        None => Vec::new(),
    };
    let bodies = (0..settings.concurrency)
        .map(|worker| Bodies::new(worker, seeded, settings.scenario, settings.keys))
        .collect();
    eprintln!(
        "bench: {} s warm-up, {} s measured, {} requests in flight{}",
        settings.warmup_secs,
        settings.duration_secs,
        settings.concurrency,
        if servers.len() > 1 {
            format!(", each worker alternating over {} replicas", servers.len())
        } else {
            String::new()
        }
    );
    let watch = realistic.then(|| {
        tokio::spawn(queue_watch::largest_backlog(
            targets[0],
            Arc::clone(&shared.stop),
        ))
    });
    let streams = subscribers::start(targets[0], settings.subscribers, &shared.stop).await?;
    let webhook = if settings.webhook {
        Some(subscribers::WebhookReceiver::start(targets[0]).await?)
    } else {
        None
    };
    let load_before = cpu::load_average();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect::<Result<_>>()?;
    let before = cpu::Sample::take(&pids, postgres_pid)?;
    let outcome = load::run(&plan, bodies, Arc::clone(&shared)).await;
    let cpu = cpu::Sample::take(&pids, postgres_pid)?.since(&before);
    shared.stop.store(true, Ordering::Relaxed);
    let mut closed = None;
    for closer in closers {
        let c = closer.await.context("a closer panicked")?;
        let total = closed.get_or_insert(scenario::Closed::default());
        total.ok += c.ok;
        total.failed += c.failed;
    }
    let outcome = outcome?;
    let largest_backlog = match watch {
        Some(watch) => watch.await.context("the queue watcher panicked")?,
        None => None,
    };
    let backlog = if settings.scenario == Scenario::Backlog {
        Some(backlog::switch_on(targets[0], seeded).await?.summary())
    } else {
        None
    };
    let rss: Vec<u64> = servers
        .iter()
        .map(Server::peak_rss_kib)
        .collect::<Result<_>>()?;
    let mut figures = Figures::new(&outcome, &rss, closed, load_before, cpu);
    figures.events = subscribers::finish(streams)
        .await?
        .map(|delivery| delivery.summary());
    if let Some(webhook) = webhook {
        let streams = figures.events.take();
        let hook = webhook.summary();
        figures.events = Some(streams.map_or_else(|| hook.clone(), |s| format!("{s}; {hook}")));
    }
    figures.counters = backlog;
    figures.largest_backlog = largest_backlog;
    Ok(figures)
}

/// The counter check (realistic scenario), then a graceful stop of every server.
async fn finish(
    settings: &Settings,
    servers: Vec<Server>,
    mut figures: Figures,
) -> Result<Figures> {
    if settings.scenario == Scenario::Realistic {
        let mut conn = Connection::new(servers[0].addr());
        let check = scenario::check_counters(&mut conn).await?;
        let targets: Vec<_> = servers.iter().map(Server::addr).collect();
        let queue = match queue_watch::drain_latency(&targets).await? {
            Some(latency) => latency.summary(),
            None => "nothing drained".to_owned(),
        };
        let largest = figures
            .largest_backlog
            .map_or_else(String::new, |n| format!("; largest backlog {n}"));
        let sticky = if settings.sticky {
            format!("; {}", scenario::sticky_hit_rate(&mut conn).await?)
        } else {
            String::new()
        };
        figures.counters = Some(if check.problems.is_empty() {
            format!(
                "ok: {} operators, every counter equals its {} open rows in total, none over its limit; {queue}{largest}{sticky}",
                check.operators, check.open_rows
            )
        } else {
            format!("FAILED: {}", check.problems.join("; "))
        });
    }
    if !figures.clean() {
        for server in &servers {
            eprintln!("{}", server.log_tail());
        }
    }
    for server in servers {
        server.stop()?;
    }
    Ok(figures)
}

/// Prints the figures, appends the CSV row, and fails when the run was not sound.
fn report(
    settings: &Settings,
    root: &Path,
    repo: &Path,
    figures: &Figures,
    tmp: &Path,
) -> Result<()> {
    figures.print(settings);
    let out = match &settings.out {
        Some(out) => root.join(out),
        None => tmp.join("bench-results.csv"),
    };
    csv::append(&out, repo, settings, figures)?;
    println!("results:   appended to {}", out.display());
    if figures
        .counters
        .as_deref()
        .is_some_and(|c| c.starts_with("FAILED"))
    {
        bail!("operator counters do not match their open contacts (see above)");
    }
    if settings.smoke {
        if figures.requests == 0 || !figures.clean() {
            bail!("the smoke run saw no requests, errors or non-2xx answers");
        }
        let rows = std::fs::read_to_string(&out)?.lines().count();
        if rows < 2 {
            bail!("the smoke run wrote no result row to {}", out.display());
        }
    }
    Ok(())
}
