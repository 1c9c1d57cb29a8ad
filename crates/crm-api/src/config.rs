//! Server configuration: environment variables with equal command-line flags.
//!
//! Every setting has a flag and an environment variable (`CRM_…`); the binary also reads
//! an optional `.env` file before parsing, whose values count as environment variables
//! that are not set already. `docs/configuration.md` lists them all.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, builder::TypedValueParser, error::ErrorKind};
use crm_store::{DatabaseUrl, StoreConfig};

use crate::server::Limits;

/// How to run the server. The log filter comes from `RUST_LOG` (default `info`).
///
/// The arguments are global: they may stand before or after a subcommand.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database URL: `sqlite://PATH?mode=rwc` (a file, created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "CRM_DATABASE_URL",
        default_value = crm_store::DEFAULT_DATABASE_URL,
        hide_env_values = true,
        value_parser = DatabaseUrlParser,
        global = true
    )]
    pub database_url: DatabaseUrl,

    /// Address to listen on.
    #[arg(
        long,
        env = "CRM_BIND",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub bind: SocketAddr,

    /// Database pool size (SQLite: the read pool; PostgreSQL: every query) [default: 4 on
    /// SQLite, 8 on PostgreSQL].
    #[arg(long, env = "CRM_DB_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub db_max_connections: Option<u32>,

    /// Longest wait for a pooled connection, in milliseconds, before a request fails
    /// with 503.
    #[arg(long, env = "CRM_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub db_acquire_timeout_ms: u64,

    /// Longest a PostgreSQL statement may run, in milliseconds (`statement_timeout`);
    /// 0 disables it.
    #[arg(
        long,
        env = "CRM_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub db_statement_timeout_ms: u64,

    /// Seconds between two safety sweeps of the waiting queue: each assigns what the
    /// drains after every write missed (capacity another replica freed). At start the
    /// queue is drained once, whatever waited before.
    #[arg(long, env = "CRM_QUEUE_SWEEP_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub queue_sweep_seconds: u64,

    /// Seconds after which a waiting contact counts as stale in `GET /api/queue` and
    /// `/metrics` (it is only flagged, never closed or skipped); unset flags none.
    #[arg(long, env = "CRM_QUEUE_MAX_WAIT",
          value_parser = clap::value_parser!(u64).range(1..=31_536_000), global = true)]
    pub queue_max_wait: Option<u64>,

    /// Hours an event is kept at least (the stream can resume from it; webhooks retry it).
    #[arg(long, env = "CRM_EVENT_RETENTION_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=87_600), global = true)]
    pub event_retention_hours: u64,

    /// Events kept at least, however old: the newest this many stay.
    #[arg(long, env = "CRM_EVENT_RETENTION_EVENTS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000), global = true)]
    pub event_retention_events: u64,

    /// Seconds between a webhook delivery's attempts, comma-separated: after the first
    /// (immediate) attempt, one retry after each delay, then the delivery fails.
    #[arg(long, env = "CRM_WEBHOOK_RETRY_SCHEDULE",
          default_value = "5,300,1800,7200,18000,36000,50400,72000,86400",
          value_parser = crm_core::RetrySchedule::parse, global = true)]
    pub webhook_retry_schedule: crm_core::RetrySchedule,

    /// Allow webhook endpoints in loopback and private address ranges (off: the service
    /// refuses them, so it cannot be made to call into its own network).
    #[arg(long, env = "CRM_WEBHOOK_ALLOW_PRIVATE", default_value_t = false,
          action = clap::ArgAction::Set, global = true)]
    pub webhook_allow_private: bool,

    /// New events one endpoint's sender reads per lease of the endpoint: more delivers
    /// faster to a fast endpoint, at the cost of server CPU the registrations could use
    /// (docs/events.md, "Throughput").
    #[arg(long, env = "CRM_WEBHOOK_BATCH", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub webhook_batch: u32,

    /// SQLite: writes waiting for the writer before new ones get 503 overloaded.
    #[arg(long, env = "CRM_WRITE_QUEUE", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), global = true)]
    pub write_queue: u64,

    /// SQLite: `synchronous = NORMAL` instead of `FULL` (off by default; the variable takes
    /// true/false, 1/0, yes/no or on/off). Faster, but the last commits may be lost on power failure (never
    /// on a process crash).
    #[arg(
        long,
        env = "CRM_SQLITE_SYNC_NORMAL",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    pub sqlite_sync_normal: bool,

    /// Log line format: `text` for people, `json` (one object per line, with the span
    /// fields such as the request id) for log collectors.
    #[arg(
        long,
        env = "CRM_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,

    /// Bearer token every `/api` request must carry (`Authorization: Bearer <token>`);
    /// unset, the API is open and the server listens on loopback addresses only.
    #[arg(long, env = "CRM_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,

    /// Longest a client may take to send a request's head (request line and headers), in
    /// milliseconds: from the connection's start for its first request, from the request's
    /// first byte on a kept-alive connection.
    #[arg(long, env = "CRM_HTTP_HEADER_TIMEOUT_MS", default_value_t = Limits::DEFAULT.header_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub http_header_timeout_ms: u64,

    /// Longest a client may take to send a request's body once its head is in, in
    /// milliseconds.
    #[arg(long, env = "CRM_HTTP_BODY_TIMEOUT_MS", default_value_t = Limits::DEFAULT.body_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub http_body_timeout_ms: u64,

    /// Longest a kept-alive connection may wait for its next request, in milliseconds.
    #[arg(long, env = "CRM_HTTP_IDLE_TIMEOUT_MS", default_value_t = Limits::DEFAULT.idle_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub http_idle_timeout_ms: u64,

    /// Connections open at once; more wait in the listen backlog. Lowered at start to the
    /// process's file-descriptor limit minus what the server needs besides connections.
    #[arg(long, env = "CRM_HTTP_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT.max_connections,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub http_max_connections: u32,

    /// Serve an open API (no CRM_ADMIN_TOKEN) on a non-loopback address anyway.
    #[arg(long, env = "CRM_INSECURE", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), global = true)]
    pub insecure: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that parses but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No admin token, but an address other machines can reach.
    #[error(
        "refusing to serve an open API on {bind}: set CRM_ADMIN_TOKEN (or --admin-token), \
         bind to 127.0.0.1, or pass --insecure to accept the risk"
    )]
    OpenBeyondLoopback {
        /// The address asked for.
        bind: std::net::SocketAddr,
    },
    /// A token too short to resist guessing.
    #[error("CRM_ADMIN_TOKEN must be at least 16 characters")]
    WeakAdminToken,
}

impl Config {
    /// Checks what the parser cannot: that an open API stays on loopback, and that a
    /// token is long enough.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting and what it expects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.admin_token {
            Some(token) if token.chars().count() < 16 => Err(ConfigError::WeakAdminToken),
            None if !self.bind.ip().is_loopback() && !self.insecure => {
                Err(ConfigError::OpenBeyondLoopback { bind: self.bind })
            }
            _ => Ok(()),
        }
    }

    /// How the app reports the waiting queue.
    #[must_use]
    pub fn queue(&self) -> crate::QueueSettings {
        crate::QueueSettings {
            max_wait: self.queue_max_wait.map(Duration::from_secs),
        }
    }

    /// How long events are kept: an event is pruned once it is older than the hours and
    /// not among the newest events, whichever keeps more.
    #[must_use]
    pub fn event_retention(&self) -> (chrono::Duration, u64) {
        let hours = i64::try_from(self.event_retention_hours).unwrap_or(i64::MAX);
        (chrono::Duration::hours(hours), self.event_retention_events)
    }

    /// How webhooks are sent.
    #[must_use]
    pub fn webhooks(&self) -> crate::WebhookSettings {
        crate::WebhookSettings {
            allow_private: self.webhook_allow_private,
            schedule: self.webhook_retry_schedule.clone(),
            batch: self.webhook_batch,
            ..crate::WebhookSettings::default()
        }
    }

    /// The app's security settings.
    #[must_use]
    pub fn security(&self) -> crate::Security {
        crate::Security {
            admin_token: self.admin_token.clone(),
        }
    }

    /// The HTTP server's limits as configured; the binary lowers `max_connections` with
    /// [`crate::server::connection_cap`] and [`Config::fd_reserve`].
    #[must_use]
    pub fn http_limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            body_timeout: Duration::from_millis(self.http_body_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            max_connections: self.http_max_connections,
        }
    }

    /// File descriptors kept for everything but client connections: 32 for the process
    /// itself (standard streams, the runtime's epoll and wakers, the listener, the lock
    /// file), and three per database connection plus the SQLite writer (a database file
    /// with its WAL and shared memory; on PostgreSQL one socket, so the reserve is generous).
    #[must_use]
    pub fn fd_reserve(&self) -> u64 {
        let pool = u64::from(self.store_config().max_connections);
        32 + 3 * (pool + 1)
    }

    /// The store's part of the configuration.
    #[must_use]
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url.clone(),
            max_connections: self
                .db_max_connections
                .unwrap_or_else(|| self.database_url.default_max_connections()),
            write_queue: usize::try_from(self.write_queue).unwrap_or(usize::MAX),
            seed: None,
            sqlite_synchronous_normal: self.sqlite_sync_normal,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: (self.db_statement_timeout_ms > 0)
                .then(|| Duration::from_millis(self.db_statement_timeout_ms)),
            clock: crm_store::Clock::system(),
        }
    }
}

/// Parses `--database-url` into crm-store's [`DatabaseUrl`]. Clap's own message for a
/// refused value repeats the value, which may carry a password; this one names only what
/// is wrong ([`crm_store::UrlError`]).
#[derive(Clone)]
struct DatabaseUrlParser;

impl TypedValueParser for DatabaseUrlParser {
    type Value = DatabaseUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<DatabaseUrl, clap::Error> {
        let parsed = value.to_str().map_or_else(
            || Err("the database url is not UTF-8".to_owned()),
            |url| {
                url.parse()
                    .map_err(|err: crm_store::UrlError| err.to_string())
            },
        );
        parsed.map_err(|message| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("CRM_DATABASE_URL/--database-url: {message}\n"),
            )
            .format(&mut cmd.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn sqlite_files_and_postgres_urls_are_accepted() {
        for url in [
            "sqlite://crm.db?mode=rwc",
            "sqlite:///data/crm.db?mode=rwc",
            "sqlite:crm.db",
            "postgres://crm:secret@db:5432/crm",
            "postgresql://localhost/crm",
        ] {
            let config = Cli::try_parse_from(["crm-api", "--database-url", url]);
            assert!(config.is_ok(), "{url}");
        }
    }

    #[test]
    fn the_pool_defaults_to_the_backend_s_size_and_a_given_size_wins() {
        let pool = |args: &[&str]| {
            Cli::parse_from(std::iter::once("crm-api").chain(args.iter().copied()))
                .config
                .store_config()
                .max_connections
        };
        assert_eq!(pool(&["--database-url", "sqlite://crm.db?mode=rwc"]), 4);
        assert_eq!(pool(&["--database-url", "postgres://db/crm"]), 8);
        assert_eq!(pool(&["--database-url", "postgresql://db/crm"]), 8);
        for url in ["sqlite://crm.db?mode=rwc", "postgres://db/crm"] {
            assert_eq!(
                pool(&["--database-url", url, "--db-max-connections", "12"]),
                12
            );
        }
    }

    #[test]
    fn the_http_limits_default_to_the_documented_values() {
        let config = Cli::parse_from(["crm-api"]).config;
        assert_eq!(
            config.http_limits(),
            crate::server::Limits {
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                max_connections: 10_000,
            }
        );
        // SQLite's default pool of 4 readers and its writer.
        assert_eq!(config.fd_reserve(), 32 + 3 * 5);
        let zero = Cli::try_parse_from(["crm-api", "--http-max-connections", "0"]);
        assert!(zero.is_err());
    }

    #[test]
    fn the_sync_flag_reads_booleans() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("crm-api").chain(args.iter().copied()))
                .map(|cli| cli.config.sqlite_sync_normal)
        };
        assert_eq!(parse(&["--sqlite-sync-normal"]).ok(), Some(true));
        assert!(parse(&["--sqlite-sync-normal=maybe"]).is_err());
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("crm-api").chain(args.iter().copied()))
                .map(|cli| cli.config.log_format)
        };
        assert_eq!(parse(&["--log-format", "json"]).ok(), Some(LogFormat::Json));
        assert_eq!(parse(&["--log-format", "text"]).ok(), Some(LogFormat::Text));
        assert!(parse(&["--log-format", "xml"]).is_err());
    }

    /// The message for a refused URL, as the binary prints it.
    fn refusal(url: &str) -> String {
        match Cli::try_parse_from(["crm-api", "--database-url", url]) {
            Ok(_) => panic!("{url} is accepted"),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::ValueValidation);
                err.to_string()
            }
        }
    }

    #[test]
    fn another_scheme_is_refused_without_echoing_the_url() {
        let message = refusal("mysql://root:hunter2@db/crm");
        assert!(
            message.contains("unsupported database url scheme \"mysql\"")
                && message.contains("CRM_DATABASE_URL")
                && !message.contains("hunter2"),
            "{message}"
        );
        let malformed = refusal("postgres://root:hunter2@db:port/crm");
        assert!(!malformed.contains("hunter2"), "{malformed}");
    }

    #[test]
    fn in_memory_and_empty_sqlite_urls_are_refused() {
        for url in ["sqlite::memory:", "sqlite://", "sqlite://?mode=rwc"] {
            let message = refusal(url);
            assert!(message.contains("must be a file"), "{url}: {message}");
        }
    }

    #[test]
    fn an_open_api_is_served_on_loopback_only_unless_insecure() {
        let open = |args: &[&str]| {
            let mut argv = vec!["crm-api"];
            argv.extend_from_slice(args);
            Cli::parse_from(argv).config.validate()
        };
        assert_eq!(open(&[]), Ok(()));
        assert_eq!(open(&["--bind", "[::1]:8000"]), Ok(()));
        assert!(matches!(
            open(&["--bind", "0.0.0.0:8000"]),
            Err(ConfigError::OpenBeyondLoopback { .. })
        ));
        assert_eq!(open(&["--bind", "0.0.0.0:8000", "--insecure"]), Ok(()));
        assert_eq!(
            open(&[
                "--bind",
                "0.0.0.0:8000",
                "--admin-token",
                "0123456789abcdef"
            ]),
            Ok(())
        );
        assert_eq!(
            open(&["--admin-token", "short"]),
            Err(ConfigError::WeakAdminToken)
        );
    }
}
