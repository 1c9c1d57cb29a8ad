//! CPU accounting from `/proc`: what the servers (by thread), PostgreSQL and this load
//! generator used during a run. On a 2-core machine shared by all three, CPU time per
//! registration says more than throughput alone, and the writer thread's share shows
//! whether it is the limit.

use std::{collections::BTreeMap, process::Command, time::Instant};

use anyhow::{Context, Result};

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// CPU seconds used so far, at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    /// By server thread name (threads of one name in all replicas added up).
    threads: BTreeMap<String, f64>,
    generator: f64,
    database: Option<f64>,
}

/// CPU seconds used between two samples.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Wall-clock seconds between the samples.
    pub span: f64,
    pub threads: BTreeMap<String, f64>,
    pub generator: f64,
    /// PostgreSQL's postmaster and backends, when it runs.
    pub database: Option<f64>,
}

impl Sample {
    /// Reads the counters of the server processes `servers`, of this process, and of
    /// PostgreSQL's postmaster `postgres` and its children.
    pub fn take(servers: &[u32], postgres: Option<u32>) -> Result<Self> {
        let mut threads = BTreeMap::new();
        for pid in servers {
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                let dir = task?.path();
                let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                // A thread may end between listing and reading: skip it.
                if let Ok(cpu) = seconds(&dir.join("stat").to_string_lossy()) {
                    *threads.entry(name.trim().to_owned()).or_insert(0.0) += cpu;
                }
            }
        }
        Ok(Self {
            at: Instant::now(),
            threads,
            generator: seconds("/proc/self/stat")?,
            database: postgres.map(tree_seconds).transpose()?,
        })
    }

    /// What was used from `earlier` to this sample.
    pub fn since(&self, earlier: &Self) -> Usage {
        let threads = self
            .threads
            .iter()
            .map(|(name, s)| (name.clone(), s - earlier.threads.get(name).unwrap_or(&0.0)))
            .collect();
        Usage {
            span: (self.at - earlier.at).as_secs_f64(),
            threads,
            generator: self.generator - earlier.generator,
            database: self.database.zip(earlier.database).map(|(a, b)| a - b),
        }
    }
}

impl Usage {
    /// All server threads together.
    pub fn server(&self) -> f64 {
        self.threads.values().sum()
    }
}

/// CPU seconds of a process and of its children alive now (PostgreSQL's backends live as
/// long as the pools' connections, so they span the run).
fn tree_seconds(pid: u32) -> Result<f64> {
    let mut total = seconds(&format!("/proc/{pid}/stat"))?;
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let is_pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        let stat = path.join("stat");
        let Some(line) = is_pid
            .then(|| std::fs::read_to_string(&stat).ok())
            .flatten()
        else {
            continue;
        };
        // The parent is the second field after the command name.
        let parent = line
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid)
            && let Ok(cpu) = seconds(&stat.to_string_lossy())
        {
            total += cpu;
        }
    }
    Ok(total)
}

/// User + system CPU seconds from a `/proc/…/stat` line.
fn seconds(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path).with_context(|| format!("read {stat_path}"))?;
    // After the command name (which may hold spaces, hence the last ')'), utime and
    // stime are the 12th and 13th fields.
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

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100, Linux's usual, if it fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
