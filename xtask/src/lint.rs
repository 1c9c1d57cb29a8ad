//! `cargo xtask lint`: formatting and clippy, as CI runs them.

use anyhow::Result;
use xshell::{Shell, cmd};

pub fn run() -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --all-features -- -D warnings"
    )
    .run()?;
    Ok(())
}
