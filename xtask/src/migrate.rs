//! `cargo xtask migrate up|down [N]|status|fresh`: the server's own migration command
//! (`crm-api migrate …`) against `CRM_DATABASE_URL`, or the SQLite default `crm.db` in the
//! project root. Settings come from the environment or a `.env` file in the project root.

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

const USAGE: &str = "usage: cargo xtask migrate up|down [N]|status|fresh";

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("up" | "down" | "status" | "fresh") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => bail!(USAGE),
    }
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    cmd!(sh, "cargo run -q -p crm-api -- migrate {args...}").run()?;
    Ok(())
}
