//! Building crm-api and running it as a child process: started on a free loopback port,
//! waited for until `/health` answers, stopped with SIGTERM (so the SQLite writer drains),
//! and killed by its guard if anything goes wrong on the way.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hyper::Method;

use crate::http::Connection;

/// How long a server may take to start (migrations included) before the run fails.
const STARTUP: Duration = Duration::from_secs(60);

/// How the server is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub exe: PathBuf,
    /// Arguments before any other (none for crm-api).
    pub args: Vec<String>,
    pub database_url: String,
    pub log: String,
    pub pool: Option<u32>,
    pub sqlite_sync_normal: bool,
}

/// A running crm-api process; stopped when dropped.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    log_file: PathBuf,
}

/// The cargo arguments that build crm-api alone, release or debug.
pub fn build_args(release: bool) -> Vec<String> {
    let mut args: Vec<String> = ["build", "-p", "crm-api", "--bin", "crm-api"]
        .map(String::from)
        .into();
    if release {
        args.push("--release".to_owned());
    }
    args
}

/// Runs cargo with `args` (a `build`, or a `test --no-run` whose integration tests carry
/// the server binary) and returns the crm-api executable as cargo reports it, so a custom
/// target directory is found too.
pub fn build(root: &Path, args: &[String]) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("bench: cargo {}", args.join(" "));
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("run cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut exe = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        // The binary itself, not the unit-test harness of its main.rs.
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "crm-api"
            && message["target"]["kind"][0] == "bin"
            && message["profile"]["test"] == false
            && let Some(path) = message["executable"].as_str()
        {
            exe = Some(PathBuf::from(path));
        }
    }
    if !child.wait()?.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    exe.context("cargo reported no crm-api executable")
}

impl Server {
    /// Starts the server on a free loopback port; its output goes to `log_file`.
    pub fn start(launch: &Launch, log_file: &Path) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log =
            File::create(log_file).with_context(|| format!("create {}", log_file.display()))?;
        let mut cmd = Command::new(&launch.exe);
        cmd.args(&launch.args)
            .env("CRM_DATABASE_URL", &launch.database_url)
            .env("CRM_BIND", addr.to_string())
            .env("RUST_LOG", &launch.log)
            // `--webhook`'s receiver is on loopback.
            .env("CRM_WEBHOOK_ALLOW_PRIVATE", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(pool) = launch.pool {
            cmd.env("CRM_DB_MAX_CONNECTIONS", pool.to_string());
        }
        if launch.sqlite_sync_normal {
            cmd.env("CRM_SQLITE_SYNC_NORMAL", "true");
        } else {
            cmd.env_remove("CRM_SQLITE_SYNC_NORMAL");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", launch.exe.display()))?;
        Ok(Self {
            child: Some(child),
            addr,
            log_file: log_file.to_owned(),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until `GET /health` answers 200, failing early if the process exits.
    pub async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        let mut conn = Connection::new(self.addr);
        loop {
            if let Ok(answer) = conn.send(Method::GET, "/health", None).await
                && answer.status == 200
            {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "crm-api exited ({status}) before it was healthy:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "crm-api on {} not healthy after {STARTUP:?}:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process's peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let pid = self.child.as_ref().context("server stopped")?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Result<u32> {
        Ok(self.child.as_ref().context("server stopped")?.id())
    }

    /// Stops the server gracefully (SIGTERM, as a deployment would) and checks it exited
    /// cleanly.
    pub fn stop(mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(child, Duration::from_secs(30))?;
        if !status.success() {
            bail!("crm-api exited with {status}:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// The last lines the server wrote, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file, 4096)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = terminate(child, Duration::from_secs(10));
        }
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within `grace`.
fn terminate(mut child: Child, grace: Duration) -> Result<std::process::ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // `kill(1)`: the workspace forbids unsafe code, which `libc::kill` would need.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    let status = child.wait()?;
    bail!("crm-api did not stop within {grace:?} of SIGTERM; killed ({status})")
}

fn log_tail(path: &Path, bytes: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
        let _ = file.read_to_end(&mut text);
    }
    format!(
        "--- {} (tail) ---\n{}",
        path.display(),
        String::from_utf8_lossy(&text)
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
