//! SeaORM adapters of the mini-crm ports.
//!
//! [`connect`] opens the database named by a URL, runs the migrations and returns a
//! [`DbStore`], which implements [`crm_core::Store`]. On SQLite (the embedded default)
//! every write goes through one writer thread with group commit, and reads use a
//! read-only pool beside it.

mod conn;
mod entity;
mod error;
mod migrate;
mod ops;
mod pg;
mod read;
mod sql;
mod sqlite;
pub mod testing;

use std::{sync::Mutex, time::Duration};

use crm_core::{
    Contact, ContactFilter, ContactId, IdempotencyKey, Lead, LeadFilter, LeadId, LeadWithContacts,
    NewContact, NewOperator, NewSource, NewSourceKey, Operator, OperatorFilter, OperatorId,
    OperatorLoad, OperatorPatch, OperatorStats, PoolStatus, Registration, Source, SourceId,
    SourceKey, SourceKeyId, SourcePatch, Store, StoreError, WeightSet, register_contact,
    register_contact_once,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sea_orm::DatabaseConnection;

pub use migrate::{MigrateAction, MigrationState, migrate};

use conn::{PgConn, PgHeld, SqliteConn};
use sqlite::writer::{Writer, WriterHandle};

/// Runs one write on whichever backend the store has: on SQLite as a job of the writer
/// thread (atomic, undone alone if it fails), on PostgreSQL in its own transaction (a
/// registration without a key: in its one writing statement, see `pg::registration`). `$body` is
/// an expression over `$conn: &impl Conn` (or, for a registration, over `$tx` and `$rng`)
/// that evaluates to a future.
macro_rules! write {
    ($self:ident, |$conn:ident| $body:expr) => {
        // Any write but a registration or a close may change what the cache holds.
        write!($self, |$conn| $body; then |cache, out| cache.clear())
    };
    // A write after which `$then` brings the SQLite writer's source cache up to date from
    // the write's result `$out` (a job that fails empties the cache anyway, see
    // `sqlite::writer`); PostgreSQL has no cache.
    ($self:ident, |$conn:ident| $body:expr; then |$cache:ident, $out:ident| $then:expr) => {
        match &$self.writes {
            Writes::Sqlite { handle, .. } => {
                handle
                    .run(move |ctx| {
                        let sqlite = SqliteConn(ctx.conn);
                        let $out = pollster::block_on({
                            let $conn = &sqlite;
                            $body
                        })?;
                        let $cache = &mut ctx.cache;
                        $then;
                        Ok($out)
                    })
                    .await
            }
            Writes::Postgres => {
                let txn = pg::begin(&$self.reader).await?;
                let result = {
                    let $conn = &PgConn(&txn);
                    $body.await
                };
                pg::finish(txn, result).await
            }
        }
    };
    // A registration: `$tx` is the backend's unit of work (`impl RegistrationTx`)
    // and `$rng` the generator behind the draw (the writer's own on SQLite, a fresh one
    // per registration on PostgreSQL). `$keyed`: whether it claims an idempotency key;
    // on PostgreSQL only then does it need a transaction (see `pg::registration`).
    ($self:ident, keyed = $keyed:literal, |$tx:ident, $rng:ident| $body:expr) => {
        match &$self.writes {
            Writes::Sqlite { handle, .. } => {
                handle
                    .run(move |ctx| {
                        let $tx = &mut sqlite::registration::SqliteRegistration::new(
                            &mut ctx.hot,
                            &mut ctx.cache,
                        );
                        let $rng = &mut ctx.rng;
                        pollster::block_on($body)
                    })
                    .await
            }
            Writes::Postgres if $keyed => {
                let txn = pg::begin(&$self.reader).await?;
                let result = {
                    let $tx = &mut pg::registration::PgRegistration::new(PgConn(&txn));
                    let $rng = &mut ChaCha8Rng::from_rng(&mut rand::rng());
                    $body.await
                };
                pg::finish(txn, result).await
            }
            Writes::Postgres => {
                let held = PgHeld::acquire(&$self.reader).await?;
                let $tx = &mut pg::registration::PgRegistration::new(held);
                let $rng = &mut ChaCha8Rng::from_rng(&mut rand::rng());
                $body.await
            }
        }
    };
}

/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://crm.db?mode=rwc";

/// How to reach and run the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` or `postgres://…`.
    pub database_url: String,
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
}

impl StoreConfig {
    /// The read pool's size when the configuration gives none, for the backend of
    /// `database_url`. An SQLite connection runs its queries on a thread of its own in this
    /// process, so more of them than the cores can run at once only add threads and memory
    /// (8 on 2 cores: 64.8–66.8 MiB peak RSS in the realistic bench scenario against
    /// 62.1–62.6 at 4, for the same throughput; docs/benchmarks.md). A PostgreSQL
    /// connection waits on the network and the server, so that backend keeps 8.
    #[must_use]
    pub fn default_max_connections(database_url: &str) -> u32 {
        if database_url.starts_with("sqlite:") {
            4
        } else {
            8
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            max_connections: Self::default_max_connections(DEFAULT_DATABASE_URL),
            write_queue: 4096,
            seed: None,
            sqlite_synchronous_normal: false,
            acquire_timeout: pg::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no supported backend.
    #[error("unsupported database url {0:?}: expected sqlite://PATH[?mode=rwc] or postgres://…")]
    UnsupportedUrl(String),
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

/// A connected store.
pub struct DbStore {
    /// The read pool (SQLite: read-only; PostgreSQL: also used for write transactions).
    reader: DatabaseConnection,
    max_connections: u32,
    writes: Writes,
}

enum Writes {
    Sqlite {
        handle: WriterHandle,
        writer: Mutex<Option<Writer>>,
        /// Retries a write while the last commit failed ([`sqlite::writer::probe`]).
        _probe: AbortOnDrop,
        /// The `flock` on the database file ([`sqlite::lock`]): last, so it is closed
        /// after the fields above, which stop SQLite's own connections.
        _lock: std::fs::File,
    },
    Postgres,
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the database, runs migrations and starts the writer.
///
/// # Errors
/// [`ConnectError`] when the database cannot be opened, locked or migrated.
pub async fn connect(config: &StoreConfig) -> Result<DbStore, ConnectError> {
    if config.database_url.starts_with("sqlite:") {
        let opened = sqlite::open(config).await?;
        Ok(DbStore {
            reader: opened.reader,
            max_connections: config.max_connections,
            writes: Writes::Sqlite {
                handle: opened.writer.handle.clone(),
                _probe: AbortOnDrop(tokio::spawn(sqlite::writer::probe(
                    opened.writer.handle.clone(),
                ))),
                writer: Mutex::new(Some(opened.writer)),
                _lock: opened.lock,
            },
        })
    } else if config.database_url.starts_with("postgres://")
        || config.database_url.starts_with("postgresql://")
    {
        Ok(DbStore {
            reader: pg::open(config).await?,
            max_connections: config.max_connections,
            writes: Writes::Postgres,
        })
    } else {
        Err(ConnectError::UnsupportedUrl(config.database_url.clone()))
    }
}

impl DbStore {
    /// Forgets idempotency keys older than [`IdempotencyKey::LIFETIME`]; returns how many.
    /// Expired keys are ignored (and taken over) anyway; this only keeps the table small,
    /// so run it now and then (the server does, hourly).
    ///
    /// # Errors
    /// Driver failures.
    pub async fn expire_idempotency_keys(&self) -> Result<usize, StoreError> {
        write!(self, |conn| ops::expire_keys(conn))
    }

    /// Stops taking writes, commits what is queued and answers it, then returns.
    pub async fn shutdown(&self) {
        match &self.writes {
            Writes::Sqlite { writer, .. } => {
                let writer = writer.lock().ok().and_then(|mut w| w.take());
                if let Some(writer) = writer {
                    writer.stop().await;
                }
            }
            Writes::Postgres => {
                if let Err(err) = self.reader.close_by_ref().await {
                    tracing::warn!(error = %err, "closing the postgres pool failed");
                }
            }
        }
    }
}

/// Every use case runs in a `debug` span named after it (the request span is its parent);
/// SeaORM adds a `trace` span per statement.
impl Store for DbStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn health(&self) -> Result<(), StoreError> {
        if let Writes::Sqlite { handle, .. } = &self.writes {
            handle.health()?;
        }
        read::health(&self.reader).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_operator(&self, new: NewOperator) -> Result<Operator, StoreError> {
        let id = write!(self, |conn| ops::create_operator(conn, &new))?;
        read::operator(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_operators(&self, filter: OperatorFilter) -> Result<Vec<Operator>, StoreError> {
        read::operators(&self.reader, filter).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_operator(&self, id: OperatorId) -> Result<Operator, StoreError> {
        read::operator(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_operator(
        &self,
        id: OperatorId,
        patch: OperatorPatch,
    ) -> Result<Operator, StoreError> {
        write!(self, |conn| ops::update_operator(conn, id, &patch))?;
        read::operator(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_operator(&self, id: OperatorId) -> Result<(), StoreError> {
        write!(self, |conn| ops::delete_operator(conn, id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_source(&self, new: NewSource) -> Result<Source, StoreError> {
        let id = write!(self, |conn| ops::create_source(conn, &new))?;
        read::source(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_sources(&self) -> Result<Vec<Source>, StoreError> {
        read::sources(&self.reader).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_source(&self, id: SourceId) -> Result<Source, StoreError> {
        read::source(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_source(&self, id: SourceId, patch: SourcePatch) -> Result<Source, StoreError> {
        write!(self, |conn| ops::update_source(conn, id, &patch))?;
        read::source(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_source(&self, id: SourceId) -> Result<(), StoreError> {
        write!(self, |conn| ops::delete_source(conn, id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn replace_weights(
        &self,
        id: SourceId,
        weights: WeightSet,
    ) -> Result<Source, StoreError> {
        write!(self, |conn| ops::replace_weights(conn, id, &weights))?;
        read::source(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_leads(&self, filter: LeadFilter) -> Result<Vec<Lead>, StoreError> {
        read::leads(&self.reader, filter).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_lead(&self, id: LeadId) -> Result<LeadWithContacts, StoreError> {
        read::lead(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn register_contact(&self, new: NewContact) -> Result<Contact, StoreError> {
        let registered = write!(self, keyed = false, |tx, rng| {
            register_contact(tx, &new, rng)
        })?;
        Ok(registered.contact)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn register_contact_once(
        &self,
        new: NewContact,
        key: IdempotencyKey,
    ) -> Result<Registration, StoreError> {
        write!(self, keyed = true, |tx, rng| {
            register_contact_once(tx, &new, &key, rng)
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_contacts(&self, filter: ContactFilter) -> Result<Vec<Contact>, StoreError> {
        read::contacts(&self.reader, filter).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_contact(&self, id: ContactId) -> Result<Contact, StoreError> {
        read::contact(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn close_contact(&self, id: ContactId) -> Result<Contact, StoreError> {
        // A close changes one cached counter; the rest of the cache stays right.
        write!(self, |conn| ops::close_contact(conn, id); then |cache, released| {
            if let Some(operator) = released {
                cache.released(operator);
            }
        })?;
        read::contact(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn assign_contact(
        &self,
        id: ContactId,
        operator_id: OperatorId,
    ) -> Result<Contact, StoreError> {
        write!(self, |conn| ops::assign_contact(conn, id, operator_id))?;
        read::contact(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn operator_stats(&self) -> Result<Vec<OperatorStats>, StoreError> {
        read::stats(&self.reader).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn operator_loads(&self) -> Result<Vec<OperatorLoad>, StoreError> {
        read::operator_loads(&self.reader).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unassigned_backlog(&self) -> Result<Vec<(SourceId, i64)>, StoreError> {
        read::unassigned_backlog(&self.reader).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_source_key(&self, new: NewSourceKey) -> Result<SourceKey, StoreError> {
        let id = write!(self, |conn| ops::create_source_key(conn, &new))?;
        read::source_key(&self.reader, id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_source_keys(&self, source_id: SourceId) -> Result<Vec<SourceKey>, StoreError> {
        read::source_keys(&self.reader, source_id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_source_key(
        &self,
        source_id: SourceId,
        key_id: SourceKeyId,
    ) -> Result<(), StoreError> {
        write!(self, |conn| ops::delete_source_key(conn, source_id, key_id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn authenticate_source_key(&self, hash: &str) -> Result<Option<SourceKey>, StoreError> {
        let Some(key) = read::source_key_by_hash(&self.reader, hash).await? else {
            return Ok(None);
        };
        // A write per request would cost every ingest a trip through the writer; the
        // last use is recorded at most once a minute per key.
        let stale = key
            .last_used_at
            .is_none_or(|t| ops::now() - t > chrono::Duration::minutes(1));
        if stale {
            let id = key.id;
            write!(self, |conn| ops::touch_source_key(conn, id))?;
        }
        Ok(Some(key))
    }

    fn pool_status(&self) -> PoolStatus {
        let mut status = read::pool_status(&self.reader, self.max_connections);
        if let Writes::Sqlite { handle, .. } = &self.writes {
            status.queued_writes = Some(handle.queued());
            status.write_group_reruns = Some(handle.reruns());
        }
        status
    }
}
