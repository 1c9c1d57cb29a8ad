//! Development tasks of mini-crm, run as `cargo xtask <task>`. One module per task;
//! `cargo xtask --help` lists them.

mod bench;
mod docker;
mod fuzz_api;
mod lint;
mod migrate;
mod openapi;
mod postgres;
mod seed_demo;
mod serve;
mod test;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

const HELP: &str = "\
cargo xtask <task> [options]

tasks:
  serve [ARGS..]      run the API on the embedded SQLite default (crm.db), ARGS go to crm-api
  test [--sqlite-only] [--no-fuzz]
                      run every test: fmt-free, both backends; starts a throwaway
                      PostgreSQL 15 unless CRM_TEST_POSTGRES_URL is set; then fuzz-api
  lint                cargo fmt --check and clippy -D warnings
  postgres            start a throwaway PostgreSQL and print its URL (Ctrl-C stops it)
  fuzz-api [OPTIONS]  schemathesis against a live server on a fresh SQLite database;
                      `cargo xtask fuzz-api --help`
  bench [OPTIONS]     HTTP load test of registrations; `cargo xtask bench --help`
  openapi             write docs/openapi.json (a test fails while it is stale)
  migrate up|down [N]|status|fresh
                      run the migrations against CRM_DATABASE_URL (default: ./crm.db)
  seed-demo [--url URL]
                      fill a running server (default http://127.0.0.1:8000) with demo
                      operators, sources and a few hundred contacts
  docker-build [ARGS..] docker build -t mini-crm .
  docker-up [ARGS..]  docker compose up -d: the API on PostgreSQL (`docker-up api-sqlite`:
                      the SQLite-only service); needs CRM_ADMIN_TOKEN in the env or .env
  docker-down [ARGS..] docker compose down, every profile
  docker-logs [ARGS..] docker compose logs -f, every profile
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("serve") => serve::run(&rest),
        Some("test") => test::run(&rest),
        Some("lint") => lint::run(),
        Some("postgres") => postgres::run_foreground(),
        Some("fuzz-api") => fuzz_api::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("openapi") => openapi::run(),
        Some("migrate") => migrate::run(&rest),
        Some("seed-demo") => seed_demo::run(&rest),
        Some("docker-build") => docker::build(&rest),
        Some("docker-up") => docker::up(&rest),
        Some("docker-down") => docker::down(&rest),
        Some("docker-logs") => docker::logs(&rest),
        None | Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

/// The workspace root, found from this crate's manifest (not the current directory).
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
