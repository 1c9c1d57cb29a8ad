//! What opening a store takes ([`StoreConfig`]) and why it may fail ([`ConnectError`]).

use std::time::Duration;

use crate::{Clock, DatabaseUrl, pg};

/// How to reach and run the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Which database, and so which backend.
    pub database_url: DatabaseUrl,
    /// Size of the read pool.
    pub max_connections: u32,
    /// Most writes waiting for the SQLite writer before new ones are refused (503).
    pub write_queue: usize,
    /// Seed of the distribution's random generator, for reproducible runs; random if unset.
    pub seed: Option<u64>,
    /// `PRAGMA synchronous = NORMAL` instead of `FULL`: faster, but the last commits may
    /// be lost on power failure (never on a process crash). Opt-in only.
    pub sqlite_synchronous_normal: bool,
    /// Longest wait for a pooled connection (PostgreSQL) before a request fails with 503.
    pub acquire_timeout: Duration,
    /// Longest a single statement may run (PostgreSQL `statement_timeout`); none if unset.
    pub statement_timeout: Option<Duration>,
    /// The time registrations and drains run at (the operators' paces, the timestamps):
    /// the system's, or a fake one a test moves.
    pub clock: Clock,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::default(),
            max_connections: DatabaseUrl::default().default_max_connections(),
            write_queue: 4096,
            seed: None,
            sqlite_synchronous_normal: false,
            acquire_timeout: pg::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Some(Duration::from_secs(10)),
            clock: Clock::system(),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Another process is serving this SQLite file.
    #[error("database {0} is in use by another crm-api process (it holds the file's lock)")]
    InUse(String),
    /// A file could not be opened.
    #[error("cannot open {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database refused the connection.
    #[error("cannot connect to the database")]
    Database(#[source] crm_core::BoxError),
    /// A migration failed.
    #[error("cannot migrate the database")]
    Migration(#[source] crm_core::BoxError),
}
