//! `cargo xtask openapi`: writes the OpenAPI document the server serves to
//! `docs/openapi.json`. The test `crm-api/tests/openapi_fresh.rs` fails while the
//! committed file differs from what the code produces.

use anyhow::{Context as _, Result};
use xshell::{Shell, cmd};

/// Where the document goes, relative to the project root.
const PATH: &str = "docs/openapi.json";

pub fn run() -> Result<()> {
    let sh = Shell::new()?;
    let root = crate::project_root();
    sh.change_dir(&root);
    let spec = cmd!(sh, "cargo run -q -p crm-api -- openapi")
        .read()
        .context("cannot produce the OpenAPI document")?;
    let document = format!("{}\n", spec.trim_end());
    let path = root.join(PATH);
    if sh.read_file(&path).is_ok_and(|old| old == document) {
        eprintln!("{PATH} is up to date");
        return Ok(());
    }
    sh.write_file(&path, document)?;
    eprintln!("wrote {PATH}");
    Ok(())
}
