//! `cargo xtask test`: the whole suite, on SQLite and on a real PostgreSQL.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crm_bench::postgres::Postgres;
use xshell::{Shell, cmd};

#[derive(clap::Args)]
pub struct Options {
    /// Skip PostgreSQL: the SQLite suite only.
    #[arg(long)]
    sqlite_only: bool,
    /// Skip the schemathesis run.
    #[arg(long)]
    no_fuzz: bool,
    /// Skip the browser tests (the page in a headless Chromium), even where one is installed.
    #[arg(long)]
    no_browser: bool,
}

pub fn run(options: &Options) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    let mut phases = Phases::default();
    phases.time("crm-core's dependencies, file lengths", || {
        crate::lint::core_dependencies(&sh)?;
        crate::lint::file_lengths(&sh)
    })?;

    // Kept alive until the tests are done; dropping it stops the server, also on failure.
    let mut _server = None;
    let mut features: Vec<&str> = Vec::new();
    if !options.sqlite_only {
        let url = match std::env::var("CRM_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let server = phases.time("PostgreSQL start", || {
                    Postgres::start().context(
                        "cannot start a throwaway PostgreSQL (set CRM_TEST_POSTGRES_URL to use \
                         another, or pass --sqlite-only)",
                    )
                })?;
                let url = server.url();
                _server = Some(server);
                url
            }
        };
        eprintln!("xtask: PostgreSQL tests use {url}");
        sh.set_var("CRM_TEST_POSTGRES_URL", url);
        features.push("--features=crm-store/postgres-tests,crm-api/postgres-tests");
    }
    // The page's tests need Chromium; found or installed here, they run rather than skip.
    if options.no_browser {
        crate::browser::skip(&sh);
    } else {
        phases.time("browser", || crate::browser::provide(&sh))?;
    }
    // The bench smoke run builds its server as the tests did (nothing to rebuild).
    let mut no_run: Vec<String> = ["test", "--workspace", "--locked", "--no-run"]
        .map(String::from)
        .into();
    no_run.extend(features.iter().map(|f| (*f).to_owned()));
    phases.time("build and cargo test", || {
        cmd!(sh, "cargo test --workspace --locked {features...}")
            .run()
            .map_err(Into::into)
    })?;
    // The benchmark harness, briefly, so it cannot rot (results go to a temporary file).
    phases.time("bench smoke", || {
        crm_bench::smoke(&crate::project_root(), &no_run)
    })?;
    // The demo data set through the API, so `cargo xtask seed-demo` cannot rot.
    phases.time("seed demo", crate::seed_demo::smoke)?;
    // A client generated from the committed document runs the README's walkthrough.
    phases.time("python client", crate::python_client::run)?;
    // schemathesis against a live server, bounded (see fuzz_api.rs); skipped only on request.
    if options.no_fuzz {
        eprintln!("xtask: --no-fuzz: skipping fuzz-api");
    } else {
        phases.time("fuzz-api", || {
            // The defaults of `cargo xtask fuzz-api`.
            crate::fuzz_api::run(&clap::Parser::parse_from(["fuzz-api"]))
        })?;
    }
    phases.report();
    Ok(())
}

/// How long each phase of the run took, printed as each ends and together at the end, so
/// a CI log shows where its minutes went (CI must stay under 30 minutes).
#[derive(Default)]
struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    /// Runs `phase`, noting its time also when it fails.
    fn time<T>(&mut self, name: &'static str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = phase();
        let took = started.elapsed();
        eprintln!("xtask: {name} took {:.0} s", took.as_secs_f64());
        self.0.push((name, took));
        result
    }

    fn report(&self) {
        let total: Duration = self.0.iter().map(|(_, took)| *took).sum();
        eprintln!("xtask: test phases:");
        for (name, took) in &self.0 {
            eprintln!("  {name:<26} {:>5.0} s", took.as_secs_f64());
        }
        eprintln!("  {:<26} {:>5.0} s", "total", total.as_secs_f64());
    }
}
