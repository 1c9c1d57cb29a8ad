//! The results file: one CSV row per run, appended, with a header when the file is new.
//! Fields are quoted as RFC 4180 says; that is all this file needs, so no CSV crate.

use std::{fs::OpenOptions, io::Write as _, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cli::Settings, stats::Figures};

const HEADER: &str = "date,commit,backend,scenario,settings,requests,window_s,registrations_per_s,\
p50_ms,p95_ms,p99_ms,max_ms,errors,non_2xx,assigned,unassigned,closed,rss_peak_mib,rss_sum_mib,\
counters,server_cpu_us_per_registration,machine,command";

/// Appends the run's row to `path`, writing the header first when the file is new or
/// empty. `repo` is the git work tree the server was built from.
pub fn append(path: &Path, repo: &Path, settings: &Settings, figures: &Figures) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(first) = existing.lines().next()
        && first != HEADER
    {
        bail!(
            "{} has another header than this harness writes; move it aside or pass --out",
            path.display()
        );
    }
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let machine = machine(&figures.load_before);
    let fields = [
        chrono::Utc::now().format("%Y-%m-%dT%H:%MZ").to_string(),
        commit(repo),
        settings.backend.name().to_owned(),
        settings.scenario.name().to_owned(),
        settings.describe(),
        figures.requests.to_string(),
        format!("{:.2}", figures.window.as_secs_f64()),
        format!("{:.0}", figures.per_sec),
        format!("{:.2}", figures.p50_ms),
        format!("{:.2}", figures.p95_ms),
        format!("{:.2}", figures.p99_ms),
        format!("{:.2}", figures.max_ms),
        figures.errors.to_string(),
        figures.non_2xx.to_string(),
        figures.assigned.to_string(),
        figures.unassigned.to_string(),
        figures.closed.map(|c| c.ok.to_string()).unwrap_or_default(),
        mib(figures.rss_max_kib),
        mib(figures.rss_sum_kib),
        figures.counters.clone().unwrap_or_default(),
        format!(
            "{:.0}",
            figures.cpu.server() * 1e6 / figures.registered_total.max(1) as f64
        ),
        match &figures.calibration {
            Some(c) => format!(
                "{machine}, calibration {:.0}/{:.0} (ratio {:.3})",
                c.before,
                c.after,
                c.ratio(figures.per_sec)
            ),
            None => machine,
        },
        settings.command.clone(),
    ];
    let mut text = String::new();
    if existing.is_empty() {
        text.push_str(HEADER);
        text.push('\n');
    } else if !existing.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(
        &fields
            .iter()
            .map(|f| quote(f))
            .collect::<Vec<_>>()
            .join(","),
    );
    text.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("append to {}", path.display()))
}

/// The commit the server was built from, `-dirty` when the work tree changes what goes
/// into it (the crates, migrations, manifests, lock file and build settings; not docs, so
/// that the rows this file gains do not mark the next run dirty).
fn commit(repo: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(hash) = git(&["rev-parse", "--short=10", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let status = [
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "crates",
        "migrations",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "rust-toolchain.toml",
    ];
    match git(&status) {
        Some(changes) if !changes.is_empty() => format!("{hash}-dirty"),
        _ => hash,
    }
}

/// The machine in a few words: cores, CPU model, and the load average when the run
/// started (other work on the machine skews the figures).
pub fn machine(load_before: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}, load {load_before} before")
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
