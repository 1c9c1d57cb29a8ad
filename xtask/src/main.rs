//! Development tasks of mini-crm, run as `cargo xtask <task>`. One module per task;
//! `cargo xtask --help` lists them.

mod lint;
mod postgres;
mod serve;
mod test;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

const HELP: &str = "\
cargo xtask <task> [options]

tasks:
  serve [ARGS..]      run the API on the embedded SQLite default (crm.db), ARGS go to crm-api
  test [--sqlite-only] run every test: fmt-free, both backends; starts a throwaway
                      PostgreSQL 15 unless CRM_TEST_POSTGRES_URL is set
  lint                cargo fmt --check and clippy -D warnings
  postgres            start a throwaway PostgreSQL and print its URL (Ctrl-C stops it)
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
