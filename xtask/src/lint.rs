//! `cargo xtask lint`: formatting, clippy, crm-core's dependency rule and the bound on a
//! source file's length, as CI runs them.

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

/// Crates that must never be in crm-core's dependency tree: other services import it as
/// a library, so it carries no database, HTTP or async runtime (see docs/architecture.md).
/// A name matches itself and its family (`sqlx` also rules out `sqlx-core`, …).
const NOT_IN_CORE: [&str; 14] = [
    "sea-orm",
    "sea-query",
    "sqlx",
    "rusqlite",
    "libsqlite3-sys",
    "tokio",
    "async-std",
    "mio",
    "poem",
    "hyper",
    "http",
    "reqwest",
    "postgres",
    "futures",
];

pub fn run() -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    core_dependencies(&sh)?;
    file_lengths(&sh)?;
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --all-features -- -D warnings"
    )
    .run()?;
    Ok(())
}

/// The most lines a Rust source file outside a `tests/` folder may have, its inline test
/// module included: past it, split the file or move its tests out (the Simplify issue).
const MAX_FILE_LINES: usize = 500;

/// Fails when a tracked Rust file outside `tests/` folders is longer than
/// [`MAX_FILE_LINES`], naming every such file.
pub fn file_lengths(sh: &Shell) -> Result<()> {
    let files = cmd!(sh, "git ls-files -- '*.rs'").read()?;
    let mut long = Vec::new();
    for file in files.lines() {
        if file.split('/').any(|part| part == "tests") {
            continue;
        }
        let lines = sh.read_file(file)?.lines().count();
        if lines > MAX_FILE_LINES {
            long.push(format!("{file}: {lines} lines"));
        }
    }
    if !long.is_empty() {
        bail!(
            "source files over {MAX_FILE_LINES} lines (split them, or move their tests to tests/):\n{}",
            long.join("\n")
        );
    }
    Ok(())
}

/// Fails when crm-core's normal or build dependencies reach a crate in [`NOT_IN_CORE`].
pub fn core_dependencies(sh: &Shell) -> Result<()> {
    let format = "{p}";
    let tree = cmd!(
        sh,
        "cargo tree --locked -p crm-core -e normal,build --prefix none --format {format}"
    )
    .quiet()
    .read()?;
    let offending = offending_crates(&tree);
    if !offending.is_empty() {
        bail!(
            "crm-core must stay free of database, HTTP and async-runtime crates, but its \
             dependency tree has: {}",
            offending.join(", ")
        );
    }
    eprintln!("xtask: crm-core's dependency tree has no database, HTTP or runtime crate");
    Ok(())
}

/// The crate names in `cargo tree` output (`name v1.2.3 …` per line) that [`NOT_IN_CORE`]
/// rules out, each once.
fn offending_crates(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            NOT_IN_CORE
                .iter()
                .any(|bad| *name == *bad || name.starts_with(&format!("{bad}-")))
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_crates_and_their_families_are_found_and_others_are_not() {
        let tree = "crm-core v0.1.0 (/work/crates/crm-core)\nserde v1.0.228\n\
                    tokio v1.48.0\nsqlx-core v0.9.0\nhttparse v1.10.1\nhttp v1.3.1\n\
                    tokio v1.48.0 (*)\nfutures-util v0.3.31\nchrono v0.4.42\n";
        assert_eq!(
            offending_crates(tree),
            ["futures-util", "http", "sqlx-core", "tokio"]
        );
        assert!(offending_crates("crm-core v0.1.0\nrand v0.10.0\nitoa v1.0.15\n").is_empty());
    }
}
