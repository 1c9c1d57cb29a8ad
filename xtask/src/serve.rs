//! `cargo xtask serve`: the API on the embedded SQLite default.

use anyhow::Result;
use xshell::{Shell, cmd};

pub fn run(args: &[String]) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    cmd!(sh, "cargo run -p crm-api -- {args...}").run()?;
    Ok(())
}
