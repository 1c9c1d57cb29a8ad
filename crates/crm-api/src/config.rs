//! Server configuration: environment variables with equal command-line flags.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use crm_store::StoreConfig;

/// How to run the server. Each setting is a flag or an environment variable; the log
/// filter comes from `RUST_LOG` (default `info`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "crm-api",
    version,
    about = "mini-crm: distributes customer contacts among operators"
)]
pub struct Config {
    /// Database URL: `sqlite://path?mode=rwc` or `postgres://…`.
    #[arg(long, env = "CRM_DATABASE_URL", default_value = crm_store::DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Address to listen on.
    #[arg(long, env = "CRM_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,

    /// Database pool size (SQLite: the read pool; PostgreSQL: every query).
    #[arg(long, env = "CRM_DB_MAX_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,

    /// Longest wait for a pooled connection, in milliseconds, before a request fails
    /// with 503.
    #[arg(long, env = "CRM_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,

    /// Longest a PostgreSQL statement may run, in milliseconds (`statement_timeout`);
    /// 0 disables it.
    #[arg(long, env = "CRM_DB_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_statement_timeout_ms: u64,

    /// SQLite: writes waiting for the writer before new ones get 503 overloaded.
    #[arg(long, env = "CRM_WRITE_QUEUE", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub write_queue: u64,

    /// SQLite: `synchronous = NORMAL` instead of `FULL`. Faster, but the last commits may
    /// be lost on power failure (never on a process crash).
    #[arg(long, env = "CRM_SQLITE_SYNC_NORMAL", default_value_t = false)]
    pub sqlite_sync_normal: bool,
}

impl Config {
    /// The store's part of the configuration.
    #[must_use]
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url.clone(),
            max_connections: self.db_max_connections,
            write_queue: usize::try_from(self.write_queue).unwrap_or(usize::MAX),
            seed: None,
            sqlite_synchronous_normal: self.sqlite_sync_normal,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: (self.db_statement_timeout_ms > 0)
                .then(|| Duration::from_millis(self.db_statement_timeout_ms)),
        }
    }
}
