//! `cargo xtask migrate up|down [N]|status|fresh`: the server's own migration command
//! (`crm-api migrate …`, which checks the arguments) against `CRM_DATABASE_URL`, or the
//! SQLite default `crm.db` in the project root. Settings come from the environment or a
//! `.env` file in the project root.

use anyhow::Result;
use xshell::{Shell, cmd};

pub fn run(args: &[String]) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    cmd!(sh, "cargo run -q -p crm-api -- migrate {args...}").run()?;
    Ok(())
}
