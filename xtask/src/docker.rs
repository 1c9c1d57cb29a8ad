//! `cargo xtask docker-build|docker-up|docker-down|docker-logs`: the image and the
//! compose stack (`Dockerfile`, `compose.yaml`), the counterparts of the original's
//! invoke tasks. Each first checks that a Docker engine answers, so that without one
//! the task fails with one clear line instead of Docker's own messages.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};
use xshell::{Shell, cmd};

/// The tag `docker-build` gives the image; compose.yaml runs the same one.
const IMAGE: &str = "mini-crm";

/// What every docker task says when there is no engine to talk to.
pub const NO_ENGINE: &str = "no Docker engine is reachable (is the Docker daemon running?)";

/// How long `docker info` may take before the engine counts as unreachable (a TCP
/// `DOCKER_HOST` that drops packets would otherwise hang the task).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// `docker build -t mini-crm [ARGS..] .`
pub fn build(args: &[String]) -> Result<()> {
    let sh = shell()?;
    cmd!(sh, "docker build -t {IMAGE} {args...} .").run()?;
    Ok(())
}

/// `docker compose up -d [ARGS..]`: the API on PostgreSQL; name `api-sqlite` to start
/// the SQLite-only service of the `sqlite` profile instead.
pub fn up(args: &[String]) -> Result<()> {
    let sh = compose_shell()?;
    cmd!(sh, "docker compose up -d {args...}").run()?;
    Ok(())
}

/// `docker compose down [ARGS..]` for the services of every profile (a plain `down`
/// leaves those of inactive profiles running).
pub fn down(args: &[String]) -> Result<()> {
    let sh = compose_shell()?;
    cmd!(sh, "docker compose --profile * down {args...}").run()?;
    Ok(())
}

/// `docker compose logs -f [ARGS..]` of every service, in any profile.
pub fn logs(args: &[String]) -> Result<()> {
    let sh = compose_shell()?;
    cmd!(sh, "docker compose --profile * logs -f {args...}").run()?;
    Ok(())
}

/// A shell in the project root, once an engine is known to answer.
fn shell() -> Result<Shell> {
    or_exit(ensure_engine(Command::new("docker")));
    let sh = Shell::new()?;
    sh.change_dir(crate::project_root());
    Ok(sh)
}

/// [`shell`], once the compose plugin is known to be installed as well.
fn compose_shell() -> Result<Shell> {
    let sh = shell()?;
    let mut version = Command::new("docker");
    version.args(["compose", "version"]);
    if !succeeds(version) {
        or_exit(Err(anyhow!(
            "docker compose is not installed (Compose v2, the `docker compose` plugin)"
        )));
    }
    Ok(sh)
}

/// Ends the task with `error: …` on one line. These are expected conditions of the
/// machine, not failures of the task: no backtrace, whatever `RUST_BACKTRACE` says.
fn or_exit(check: Result<()>) {
    if let Err(err) = check {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

/// Fails with [`NO_ENGINE`] unless `docker info` run through `docker` (a `docker`
/// command, with whatever environment the caller gave it) succeeds: it fails when the
/// program is missing, or when the engine it points at does not answer.
fn ensure_engine(mut docker: Command) -> Result<()> {
    docker.args(["info", "--format", "{{.ServerVersion}}"]);
    if succeeds(docker) {
        Ok(())
    } else {
        bail!(NO_ENGINE)
    }
}

/// Runs `command` silently; true when it exits with success within [`PROBE_TIMEOUT`].
fn succeeds(mut command: Command) -> bool {
    let Ok(mut child) = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_docker_program_means_no_engine() {
        let err = ensure_engine(Command::new("/nonexistent/docker")).expect_err("no docker");
        assert_eq!(err.to_string(), NO_ENGINE);
    }

    #[test]
    fn an_engine_address_that_leads_nowhere_means_no_engine() {
        let mut docker = Command::new("docker");
        docker
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("DOCKER_CONTEXT");
        let err = ensure_engine(docker).expect_err("nothing listens there");
        assert_eq!(err.to_string(), NO_ENGINE);
    }
}
