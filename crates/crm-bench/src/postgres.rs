//! A throwaway PostgreSQL server for benchmarks and for `cargo xtask test`: Debian's
//! PostgreSQL 15 in a temporary directory on a free port, stopped and removed when dropped.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::server::free_port;

/// Where Debian installs PostgreSQL 15's programs (`initdb`, `pg_ctl`, `psql`).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// How durable the throwaway server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, no synchronous commit: tests check logic, not crash safety.
    Off,
    /// PostgreSQL's defaults (fsync, synchronous commit, full page writes): benchmarks.
    Full,
}

/// A running server.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    /// Initialises a cluster for tests (fsync off) and starts it.
    pub fn start() -> Result<Self> {
        Self::start_with(Durability::Off)
    }

    /// Initialises a cluster and starts it. As root, the server runs as the `postgres`
    /// user (initdb refuses root).
    pub fn start_with(durability: Durability) -> Result<Self> {
        let root = is_root();
        let base = std::env::temp_dir().join(format!("crm-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        let data = base.join("data");
        if root {
            chmod_755(&std::env::temp_dir())?;
            chmod_755(&base)?;
            run(Command::new("chown").arg("postgres:postgres").arg(&base))?;
        }
        let port = free_port()?;
        let server = Self { dir: base, port };
        server
            .as_postgres(root, &format!("{BIN}/initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .context("run initdb")
            .and_then(check)?;
        let durability = match durability {
            Durability::Off => " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::Full => "",
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300{durability}",
            server.dir.display()
        );
        server
            .as_postgres(root, &format!("{BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("run pg_ctl start")
            .and_then(check)?;
        Ok(server)
    }

    /// The URL of the `postgres` database as superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's main process id (from `postmaster.pid`), for CPU accounting.
    pub fn pid(&self) -> Result<u32> {
        let path = self.dir.join("data").join("postmaster.pid");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(text.lines().next().unwrap_or_default().trim().parse()?)
    }

    fn as_postgres(&self, root: bool, program: &str) -> Command {
        if root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", program]);
            cmd
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres(is_root(), &format!("{BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chmod_755(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o005 != 0o005 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o755))?;
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    cmd.output().context("spawn").and_then(check)
}

fn check(output: std::process::Output) -> Result<()> {
    if output.status.success() {
        Ok(())
    } else {
        bail!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}
