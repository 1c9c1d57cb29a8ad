//! The headless Chromium that the page's tests drive (crates/crm-api/tests/common/browser.rs):
//! found, or installed with apt-get where the run may, and handed to the tests through the
//! environment, so `cargo xtask test` runs them instead of letting them skip.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// Finds Chromium and chromedriver (installing them as root with apt-get when missing) and
/// tells the tests to use them and to fail without them. Without a browser the run goes on
/// and the tests skip, except in CI, where a suite that quietly skipped would pass untested.
pub fn provide(sh: &Shell) -> Result<()> {
    let found = find_both().or_else(|why| {
        if !may_install(sh) {
            return Err(format!(
                "{why}; xtask installs them only as root with apt-get"
            ));
        }
        install(sh).map_err(|e| format!("{why}; installing them failed: {e:#}"))?;
        find_both()
    });
    match found {
        Ok((chromium, chromedriver)) => {
            // Debian's launcher script complains on stderr about its own /dev/shm check.
            let version = cmd!(sh, "{chromium} --version")
                .ignore_stderr()
                .read()
                .with_context(|| format!("cannot run {}", chromium.display()))?;
            eprintln!(
                "xtask: browser tests use {} ({})",
                chromium.display(),
                version.trim()
            );
            sh.set_var("CRM_TEST_CHROMIUM", &chromium);
            sh.set_var("CRM_TEST_CHROMEDRIVER", &chromedriver);
            sh.set_var("CRM_TEST_REQUIRE_BROWSER", "1");
            Ok(())
        }
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => bail!(
            "browser tests cannot run: {why}; install chromium and chromium-driver (Debian) \
             in the CI image, or pass --no-browser"
        ),
        Err(why) => {
            eprintln!("xtask: browser tests skipped: {why}");
            Ok(())
        }
    }
}

/// Tells the tests to skip, as `--no-browser` asks, even where a browser is installed.
pub fn skip(sh: &Shell) {
    eprintln!("xtask: --no-browser: browser tests skipped on request");
    sh.set_var("CRM_TEST_SKIP_BROWSER", "1");
}

/// Chromium and chromedriver, or why not.
fn find_both() -> Result<(PathBuf, PathBuf), String> {
    let chromium = find("CRM_TEST_CHROMIUM", "chromium");
    let chromedriver = find("CRM_TEST_CHROMEDRIVER", "chromedriver");
    let missing = match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => return Ok((chromium, chromedriver)),
        (None, Some(_)) => "no `chromium`",
        (Some(_), None) => "no `chromedriver`",
        (None, None) => "neither `chromium` nor `chromedriver`",
    };
    Err(format!("{missing} on PATH or in /usr/bin"))
}

/// The program the variable `env` names, taken as given (the tests say if it is wrong, and
/// installing would not help), else `name` on `PATH` or in `/usr/bin`.
fn find(env: &str, name: &str) -> Option<PathBuf> {
    let named = std::env::var_os(env).filter(|path| !path.is_empty());
    named.map(PathBuf::from).or_else(|| on_path(name))
}

/// `name` on `PATH`, else in `/usr/bin` (which a minimal `PATH` may lack).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether this run may install packages: as root (a container or CI image), where apt-get is.
fn may_install(sh: &Shell) -> bool {
    let root = cmd!(sh, "id -u").quiet().read().is_ok_and(|uid| uid == "0");
    root && on_path("apt-get").is_some()
}

/// Debian's package names (the `rust:*-slim` images are Debian); xshell echoes each command.
fn install(sh: &Shell) -> Result<()> {
    eprintln!("xtask: installing chromium and chromium-driver with apt-get (running as root)");
    cmd!(sh, "apt-get update").run()?;
    cmd!(sh, "apt-get install -y chromium chromium-driver")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Ok(())
}
