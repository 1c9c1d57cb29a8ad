//! The options of `cargo xtask bench`, and the settings they resolve to.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

/// Options as typed on the command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cargo xtask bench",
    about = "HTTP load test of POST /api/contacts against a fresh crm-api (loopback only)",
    after_help = "Examples:\n  cargo xtask bench\n  cargo xtask bench --scenario realistic\n  \
                  cargo xtask bench --preload 1000000\n  cargo xtask bench --postgres --replicas 2"
)]
pub struct Options {
    /// Seconds of measured load, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,

    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub warmup: u64,

    /// Requests in flight at once: one keep-alive connection per replica for each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,

    /// Run on a throwaway PostgreSQL 15 (fsync on) instead of an SQLite file.
    #[arg(long)]
    pub postgres: bool,

    /// crm-api processes on the same database, load split round-robin (PostgreSQL only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub replicas: u64,

    /// Contacts stored before the run, directly in SQL (most of them closed).
    #[arg(long, default_value_t = 0)]
    pub preload: u64,

    /// What to seed and fire.
    #[arg(long, value_enum, default_value_t = Scenario::Default)]
    pub scenario: Scenario,

    /// Which registrations carry an `Idempotency-Key` (each its own)
    /// [default: none; realistic scenario: half].
    #[arg(long, value_enum)]
    pub idempotency: Option<Keys>,

    /// The server's `RUST_LOG`.
    #[arg(long, default_value = "warn")]
    pub log: String,

    /// Database pool size per server (`CRM_DB_MAX_CONNECTIONS`); on PostgreSQL the default
    /// is 16 split among the replicas (16 for one, 8 each for two), so that every run
    /// holds the same number of connections; on SQLite, the server's own default.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub pool: Option<u32>,

    /// SQLite `synchronous = NORMAL` (`CRM_SQLITE_SYNC_NORMAL`): less durable, faster.
    #[arg(long)]
    pub sqlite_sync_normal: bool,

    /// Stop after this many measured requests, even before the duration is over.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,

    /// CSV file the result row is appended to, relative to the workspace root
    /// [default: docs/bench-results.csv; with --smoke: a temporary file].
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Benchmark this crm-api executable (e.g. one built from another commit, for a
    /// before/after comparison) instead of building the work tree's. The CSV records the
    /// commit of the git work tree the executable lies in.
    #[arg(long, value_name = "PATH")]
    pub server_exe: Option<PathBuf>,

    /// Before and after the run, fire the same load for 5 s at a bare poem-openapi server
    /// (no database) and report the run's rate as a share of it: a measure of this
    /// machine's speed in the same minutes, so figures from different hosts compare.
    #[arg(long)]
    pub calibrate: bool,

    /// A short run on a debug build (a few hundred requests) that checks the harness
    /// works; writes its row to a temporary file unless --out is given.
    #[arg(long)]
    pub smoke: bool,

    /// After the load, time the supervisor's reports on the data it left (with --preload,
    /// a day of that many decisions): the first source's distribution over the last 24
    /// hours and a dry run of its weights (10,000 picks), each five times; printed only.
    #[arg(long)]
    pub reports: bool,

    /// The seeded sources' strategy. Sent only when it is not the default, so a server
    /// that predates strategies (the pinned baseline) is seeded exactly as before.
    #[arg(long, value_enum, default_value_t = SourceStrategy::WeightedRandom)]
    pub strategy: SourceStrategy,

    /// Seed the sources with `sticky_owner`; the realistic scenario then reports the
    /// sticky hit rate (how many returning leads with an owner went back to it).
    #[arg(long)]
    pub sticky: bool,

    /// Hold this many `GET /api/events` streams open on the first server while the load
    /// runs, and report how long events took to reach them.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub subscribers: u16,

    /// Register a webhook endpoint (every event type) on the first server, served by this
    /// process, and report how many deliveries it received.
    #[arg(long)]
    pub webhook: bool,
}

/// A source's strategy, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SourceStrategy {
    /// The weighted lottery (the default).
    WeightedRandom,
    /// The smooth weighted rule.
    SmoothWeighted,
}

impl SourceStrategy {
    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::WeightedRandom => "weighted_random",
            Self::SmoothWeighted => "smooth_weighted",
        }
    }
}

/// Contacts the backlog scenario queues before switching the operators on.
pub const BACKLOG: u64 = 10_000;

/// The seeded data and the traffic fired at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 10 operators of capacity 1,000,000 on one source, weights 1..10; registrations
    /// only, half from returning leads.
    Default,
    /// 20 operators of capacity 5..50 over three sources, contacts closed at about a tenth
    /// of the registration rate, returning leads; the counters are checked afterwards.
    Realistic,
    /// 10 operators of capacity 2,000 on one source, weights 1..10, all switched off: the
    /// load queues 10,000 contacts (no warm-up), then the operators are switched on one
    /// after another; reports how long the queue took to empty and who took what.
    Backlog,
}

impl Scenario {
    /// The name used in the report and the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Realistic => "realistic",
            Self::Backlog => "backlog",
        }
    }
}

/// Which registrations carry an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Keys {
    /// None.
    None,
    /// Every other one.
    Half,
    /// Every one.
    All,
}

impl Keys {
    /// The name used in the report and the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Half => "half",
            Self::All => "all",
        }
    }
}

/// Which database the servers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file in a temporary directory.
    Sqlite,
    /// A throwaway PostgreSQL cluster, fsync on.
    Postgres,
}

impl Backend {
    /// The name used in the report and the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The options checked and resolved: what the run actually does.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: Backend,
    pub scenario: Scenario,
    pub keys: Keys,
    pub replicas: usize,
    pub concurrency: usize,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub max_requests: u64,
    pub preload: u64,
    pub log: String,
    pub pool: Option<u32>,
    pub sqlite_sync_normal: bool,
    pub calibrate: bool,
    pub release: bool,
    pub smoke: bool,
    pub reports: bool,
    pub strategy: SourceStrategy,
    pub sticky: bool,
    pub subscribers: usize,
    pub webhook: bool,
    pub server_exe: Option<PathBuf>,
    /// `None`: a temporary file (the smoke run's default).
    pub out: Option<PathBuf>,
    /// The command line as typed, for the report and the CSV.
    pub command: String,
}

/// Parses the arguments after `bench`; as clap does in a binary, `--help` and an unknown
/// option print their text and end the process.
pub fn parse(args: &[String]) -> Result<Settings> {
    let options = Options::parse_from(
        std::iter::once("cargo xtask bench".to_owned()).chain(args.iter().cloned()),
    );
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().map(|a| shell_word(a)))
        .collect::<Vec<_>>()
        .join(" ");
    resolve(options, command)
}

fn resolve(o: Options, command: String) -> Result<Settings> {
    let backend = if o.postgres {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    if backend == Backend::Sqlite && o.replicas > 1 {
        bail!(
            "--replicas {} needs --postgres: an SQLite file is served by exactly one process \
             (it holds an exclusive lock on the database)",
            o.replicas
        );
    }
    if backend == Backend::Postgres && o.sqlite_sync_normal {
        bail!("--sqlite-sync-normal applies to SQLite only");
    }
    let (warmup_secs, duration_secs, max_requests) = match (o.smoke, o.scenario) {
        // A few hundred requests: enough to exercise every part, short enough for CI.
        (true, _) => (0, o.duration.min(3), o.max_requests.min(400)),
        // Every registration queues; the load ends once the backlog is there.
        (false, Scenario::Backlog) => (0, o.duration.max(120), o.max_requests.min(BACKLOG)),
        (false, _) => (o.warmup, o.duration, o.max_requests),
    };
    Ok(Settings {
        backend,
        scenario: o.scenario,
        keys: o.idempotency.unwrap_or(match o.scenario {
            Scenario::Default | Scenario::Backlog => Keys::None,
            Scenario::Realistic => Keys::Half,
        }),
        replicas: usize::try_from(o.replicas)?,
        concurrency: usize::try_from(if o.smoke {
            o.concurrency.min(8)
        } else {
            o.concurrency
        })?,
        warmup_secs,
        duration_secs,
        max_requests,
        preload: o.preload,
        log: o.log,
        pool: o.pool.or((backend == Backend::Postgres).then(|| {
            let replicas = u32::try_from(o.replicas.max(1)).unwrap_or(u32::MAX);
            (DEFAULT_PG_POOL / replicas).max(1)
        })),
        sqlite_sync_normal: o.sqlite_sync_normal,
        calibrate: o.calibrate,
        reports: o.reports,
        strategy: o.strategy,
        sticky: o.sticky,
        subscribers: usize::from(o.subscribers),
        webhook: o.webhook,
        release: !o.smoke,
        smoke: o.smoke,
        server_exe: o.server_exe,
        out: match o.out {
            Some(out) => Some(out),
            None if o.smoke => None,
            None => Some(PathBuf::from(DEFAULT_OUT)),
        },
        command,
    })
}

/// Where hand-run results are kept.
const DEFAULT_OUT: &str = "docs/bench-results.csv";

/// PostgreSQL connections of all servers together: the prototype measured 8 and 32 per
/// server as no better than 16 for one; two replicas with 16 each (32 in all) were
/// slower than with 8 each (docs/benchmarks.md).
const DEFAULT_PG_POOL: u32 = 16;

impl Settings {
    /// The settings that shape the figures, as one compact string for the report.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            format!("c={}", self.concurrency),
            format!("warmup={}s", self.warmup_secs),
            format!("duration={}s", self.duration_secs),
            format!("replicas={}", self.replicas),
            format!("preload={}", self.preload),
            format!("idempotency={}", self.keys.name()),
            format!("log={}", self.log),
            match &self.server_exe {
                Some(exe) => format!("exe={}", exe.display()),
                None => format!("build={}", if self.release { "release" } else { "debug" }),
            },
        ];
        if let Some(pool) = self.pool {
            parts.push(format!("pool={pool}"));
        }
        if self.backend == Backend::Sqlite {
            let sync = if self.sqlite_sync_normal {
                "normal"
            } else {
                "full"
            };
            parts.push(format!("sync={sync}"));
        }
        if self.strategy != SourceStrategy::WeightedRandom {
            parts.push(format!("strategy={}", self.strategy.name()));
        }
        if self.sticky {
            parts.push("sticky".to_owned());
        }
        if self.subscribers > 0 {
            parts.push(format!("subscribers={}", self.subscribers));
        }
        if self.webhook {
            parts.push("webhook".to_owned());
        }
        parts.join(" ")
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
