//! Development tasks of mini-crm, run as `cargo xtask <task>`. One module per task;
//! `cargo xtask --help` lists them.

mod api_client;
mod browser;
mod docker;
mod fuzz_api;
mod lint;
mod migrate;
mod openapi;
mod python_client;
mod seed_demo;
mod serve;
mod test;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Parser};
use crm_bench::postgres::Postgres;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Development tasks of mini-crm"
)]
enum Task {
    /// Run the API on the embedded SQLite default (crm.db); ARGS go to crm-api.
    Serve(Passed),
    /// Run every test, on SQLite and on a throwaway PostgreSQL 15 (unless
    /// CRM_TEST_POSTGRES_URL is set) and in a headless Chromium (installed as root with
    /// apt-get if missing), then the bench smoke, a generated Python client and fuzz-api.
    Test(test::Options),
    /// cargo fmt --check, clippy -D warnings and crm-core's dependency rule.
    Lint,
    /// Start a throwaway PostgreSQL and print its URL (Enter or Ctrl-C stops it).
    Postgres,
    /// schemathesis against a live server on a fresh SQLite database.
    FuzzApi(fuzz_api::Options),
    /// A Python client generated from docs/openapi.json through the README's walkthrough.
    PythonClient,
    /// HTTP load test of registrations (crates/crm-bench); `cargo xtask bench --help`.
    Bench(Passed),
    /// Write docs/openapi.json (a test fails while it is stale).
    Openapi,
    /// Run the migrations against CRM_DATABASE_URL (default: ./crm.db): up|down [N]|status|fresh.
    Migrate(Passed),
    /// Fill a running server with demo operators, sources and a few hundred contacts.
    SeedDemo(seed_demo::Options),
    /// docker build -t mini-crm [ARGS..] .
    DockerBuild(Passed),
    /// docker compose up -d [ARGS..]: the API on PostgreSQL (`docker-up api-sqlite`: the
    /// SQLite-only service); needs CRM_ADMIN_TOKEN in the env or .env.
    DockerUp(Passed),
    /// docker compose down [ARGS..], every profile.
    DockerDown(Passed),
    /// docker compose logs -f [ARGS..], every profile.
    DockerLogs(Passed),
}

/// Arguments handed on as typed, `--help` included.
#[derive(Args)]
#[command(disable_help_flag = true)]
struct Passed {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

fn main() -> Result<()> {
    match Task::parse() {
        Task::Serve(p) => serve::run(&p.args),
        Task::Test(options) => test::run(&options),
        Task::Lint => lint::run(),
        Task::Postgres => postgres(),
        Task::FuzzApi(options) => fuzz_api::run(&options),
        Task::PythonClient => python_client::run(),
        Task::Bench(p) => crm_bench::run(&project_root(), &p.args),
        Task::Openapi => openapi::run(),
        Task::Migrate(p) => migrate::run(&p.args),
        Task::SeedDemo(options) => seed_demo::run(&options),
        Task::DockerBuild(p) => docker::build(&p.args),
        Task::DockerUp(p) => docker::up(&p.args),
        Task::DockerDown(p) => docker::down(&p.args),
        Task::DockerLogs(p) => docker::logs(&p.args),
    }
}

/// `cargo xtask postgres`: a server for manual use until Enter or Ctrl-C.
fn postgres() -> Result<()> {
    let server = Postgres::start()?;
    println!("{}", server.url());
    eprintln!("PostgreSQL is running; press Enter (or Ctrl-C) to stop it");
    let _ = std::io::stdin().read_line(&mut String::new());
    Ok(())
}

/// The workspace root, found from this crate's manifest (not the current directory):
/// the one `cargo run` names at run time, so a binary built for another checkout that
/// shares the target directory (cargo reuses it when the sources are the same) still
/// works on the checkout it was run from; the one it was built from otherwise.
fn project_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
