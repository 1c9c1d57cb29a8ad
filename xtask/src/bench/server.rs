//! Building crm-api and running it as a child process: started on a free loopback port,
//! waited for until `/health` answers, stopped with SIGTERM (so the SQLite writer drains),
//! and killed by its guard if anything goes wrong on the way.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hyper::Method;

use super::http::Connection;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub exe: PathBuf,
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
        cmd.env("CRM_DATABASE_URL", &launch.database_url)
            .env("CRM_BIND", addr.to_string())
            .env("RUST_LOG", &launch.log)
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
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
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
                    "crm-api on {} not healthy after {timeout:?}:\n{}",
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

    /// CPU time the process has used so far (user + system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.child.as_ref().context("server stopped")?.id();
        cpu_seconds(&format!("/proc/{pid}/stat"))
    }

    /// CPU seconds so far by thread name (threads of one name added up): shows whether
    /// the SQLite writer thread or the HTTP workers are the limit.
    pub fn thread_cpu_seconds(&self) -> Result<BTreeMap<String, f64>> {
        let pid = self.child.as_ref().context("server stopped")?.id();
        let mut by_name = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let dir = task?.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            // A thread may end between listing and reading: skip it.
            if let Ok(cpu) = cpu_seconds(&dir.join("stat").to_string_lossy()) {
                *by_name.entry(name.trim().to_owned()).or_insert(0.0) += cpu;
            }
        }
        Ok(by_name)
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

/// CPU seconds of a process and its children that are alive now (PostgreSQL: the
/// postmaster and its backends, which live as long as the pools' connections).
pub fn tree_cpu_seconds(pid: u32) -> Result<f64> {
    let mut total = cpu_seconds(&format!("/proc/{pid}/stat"))?;
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let is_pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        let stat = path.join("stat");
        let Ok(line) = std::fs::read_to_string(&stat) else {
            continue;
        };
        // ppid is the second field after the command name.
        let parent = line
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid)
            && let Ok(cpu) = cpu_seconds(&stat.to_string_lossy())
        {
            total += cpu;
        }
    }
    Ok(total)
}

/// User + system CPU seconds of a process, from its `/proc/…/stat` line.
pub fn cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path).with_context(|| format!("read {stat_path}"))?;
    // Fields after the command name (which may hold spaces, hence the last ')'):
    // state is field 3, utime 14 and stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("odd /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
