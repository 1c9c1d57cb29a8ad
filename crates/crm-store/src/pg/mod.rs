//! The PostgreSQL backend: one async SeaORM pool for reads and writes, each write in its
//! own transaction, but for a registration without an idempotency key, whose only write
//! is one statement (see [`registration`]). Several API processes may share the database: the capacity claim is
//! a conditional update (see `sql::CLAIM_OPERATOR`), so no process needs to know of the
//! others.

pub mod registration;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crm_core::{PoolStatus, SourceId, StoreError};
use migration::{Migrator, MigratorTrait};
use rand_chacha::ChaCha8Rng;
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait,
};
use tokio::sync::Semaphore;

use crate::{
    ConnectError, PgUrl, StoreConfig,
    clock::Clock,
    conn::{PgConn, PgHeld},
    drain::{self, DrainLog, Scope},
    error::db_err,
    read,
};
use registration::PgRegistration;

/// The PostgreSQL backend: one pool for reads and writes. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) reader: DatabaseConnection,
    pub(crate) max_connections: u32,
    /// Sources whose queue a drain after a waiting registration is serving now, each with
    /// whether another waiting registration came meanwhile ([`PgStore::drain_source`]).
    draining: Arc<Mutex<HashMap<SourceId, bool>>>,
    /// Drains running in the background at once: at most a quarter of the pool, so that
    /// drains of a long queue, which outlive the writes that started them, never take the
    /// connections registrations need.
    drains: Arc<Semaphore>,
    /// The time registrations and drains run at.
    pub(crate) clock: Clock,
    /// The drain owed to a refilling pace bucket, and the drains' latencies.
    pub(crate) drain_log: Arc<DrainLog>,
}

/// A source marked as being drained ([`PgStore::drain_source`]); the mark is removed when
/// the drain ends, or when this is dropped (a panicking drain).
struct Serving {
    draining: Arc<Mutex<HashMap<SourceId, bool>>>,
    source: SourceId,
    ended: bool,
}

impl Serving {
    /// Marks `source`; `None` when it is marked already, in which case the running drain
    /// is asked to go round once more.
    fn start(draining: &Arc<Mutex<HashMap<SourceId, bool>>>, source: SourceId) -> Option<Self> {
        let mut marked = draining.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(again) = marked.get_mut(&source) {
            *again = true;
            return None;
        }
        marked.insert(source, false);
        Some(Self {
            draining: Arc::clone(draining),
            source,
            ended: false,
        })
    }

    /// After a round: whether to go round again (a waiting registration came meanwhile);
    /// otherwise the mark is removed, under the same lock, so none is missed.
    fn again(&mut self) -> bool {
        let mut marked = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        match marked.get_mut(&self.source) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                marked.remove(&self.source);
                self.ended = true;
                false
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.ended {
            self.draining
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.source);
        }
    }
}

/// A drain's steps, each in a transaction of its own.
struct Transactions<'s> {
    store: &'s PgStore,
    rng: ChaCha8Rng,
}

impl drain::Steps for Transactions<'_> {
    async fn step(
        &mut self,
        source: crm_core::SourceId,
        avoid: Option<(crm_core::ContactId, crm_core::OperatorId)>,
    ) -> Result<drain::Step, StoreError> {
        let rng = &mut self.rng;
        let now = self.store.clock.now();
        self.store
            .write(async |conn| drain::drain_step(conn, source, avoid, now, rng).await)
            .await
    }
}

/// Any number: the key of the advisory lock that serialises migrations of replicas
/// starting together.
pub const MIGRATION_LOCK: i64 = 0x0063_726d_5f6d_6967;

/// Connects the pool and runs pending migrations under an advisory lock.
pub async fn open(url: &PgUrl, config: &StoreConfig) -> Result<PgStore, ConnectError> {
    let mut options = ConnectOptions::new(url.as_secret_str());
    options
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_timeout(config.acquire_timeout)
        // sqlx pings every connection it hands out by default: one more round trip per
        // registration. Only connections idle for a second are pinged now, which under
        // load is none of them. A broken connection is noticed by its next statement
        // (a 503); from then on, for a while, every connection is pinged before use, so
        // that after a server restart one request fails, not one per pooled connection.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .map_sqlx_postgres_before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_IF_IDLE_FOR && crate::error::lost_recently() {
                    sea_orm::sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .sqlx_logging(false);
    if let Some(timeout) = config.statement_timeout {
        options.statement_timeout(timeout);
    }
    let db = sea_orm::Database::connect(options)
        .await
        .map_err(|err| ConnectError::Database(Box::new(err)))?;
    migrate(&db)
        .await
        .map_err(|err| ConnectError::Migration(Box::new(err)))?;
    Ok(PgStore {
        reader: db,
        max_connections: config.max_connections,
        draining: Arc::default(),
        drains: Arc::new(Semaphore::new(
            usize::try_from(config.max_connections / 4)
                .unwrap_or(1)
                .max(1),
        )),
        clock: config.clock.clone(),
        drain_log: Arc::default(),
    })
}

impl PgStore {
    /// Runs `write` in its own transaction, committed if it succeeds.
    pub(crate) async fn write<T>(
        &self,
        write: impl AsyncFnOnce(&PgConn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.reader.begin().await.map_err(db_err)?;
        let result = write(&PgConn(&txn)).await;
        finish(txn, result).await
    }

    /// [`Self::write`], then, after the commit, a drain of `scope(&result)`
    /// ([`Self::drain_logged`]). The write stands whatever the drain meets: a failed drain is
    /// logged, and the sweep serves what it left.
    pub(crate) async fn write_draining<T>(
        &self,
        write: impl AsyncFnOnce(&PgConn<'_>) -> Result<T, StoreError>,
        scope: impl Fn(&T) -> Option<Scope>,
    ) -> Result<T, StoreError> {
        let out = self.write(write).await?;
        if let Some(scope) = scope(&out) {
            self.drain_logged(scope).await;
        }
        Ok(out)
    }

    /// After a registration stored a contact of `source` waiting: a drain of that source,
    /// unless one started this way is serving it already, which is then asked to go round
    /// once more when it ends (so a contact committed just as it ended is not left to the
    /// sweep). Without this, each of many registrations into a long queue ran a drain of its
    /// own that found nobody eligible, and queueing slowed to ~200/s (docs/benchmarks.md,
    /// the backlog scenario).
    pub(crate) async fn drain_source(&self, source: SourceId) {
        if let Some(serving) = Serving::start(&self.draining, source) {
            self.drain_in_background(Scope::Source(source), Some(serving))
                .await;
        }
    }

    /// [`Self::drain`] in a task of its own, waited for at most [`DRAIN_BEFORE_ANSWER`]:
    /// a drain of a few contacts is over by then, so the write's answer (and a read right
    /// after it) shows its result; a long backlog (one transaction per contact) goes on
    /// draining after the answer instead of holding the request. A failure is logged; the
    /// sweep retries.
    pub(crate) async fn drain_logged(&self, scope: Scope) {
        self.drain_in_background(scope, None).await;
    }

    /// Runs [`Self::drain`] of `scope` in a task holding one of [`PgStore::drains`]'
    /// permits, again while `serving` asks for another round, and waits for it at most
    /// [`DRAIN_BEFORE_ANSWER`].
    async fn drain_in_background(&self, scope: Scope, mut serving: Option<Serving>) {
        let mut asked = Instant::now();
        let store = self.clone();
        let drain = tokio::spawn(async move {
            let _permit = store.drains.acquire().await;
            loop {
                if let Err(err) = store.drain(scope, asked).await {
                    tracing::warn!(error = %err, ?scope, "draining the queue failed; the sweep will retry");
                }
                if !serving.as_mut().is_some_and(Serving::again) {
                    break;
                }
                // Another round for registrations that came meanwhile: asked for now.
                asked = Instant::now();
            }
        });
        // Whether it ended or goes on in the background, the answer goes out now.
        let _ = tokio::time::timeout(DRAIN_BEFORE_ANSWER, drain).await;
    }

    /// Drains the queue in `scope`, each contact in a transaction of its own that takes the
    /// oldest waiting contact with `FOR UPDATE SKIP LOCKED`: drains of several replicas at
    /// once never take the same contact, and a contact is assigned completely or not at all.
    /// `asked`: when the drain was asked for, which its latencies count from.
    pub(crate) async fn drain(
        &self,
        scope: Scope,
        asked: Instant,
    ) -> Result<drain::Drained, StoreError> {
        // Only reads: one statement on a pooled connection, no transaction around it.
        let heads = drain::queue_heads(&PgHeld::acquire(&self.reader).await?, scope).await?;
        let mut steps = Transactions {
            store: self,
            rng: crate::fresh_rng(),
        };
        let drained = drain::drain(scope, heads, asked, &mut steps).await?;
        // After a drain of every source, what it owes replaces what was owed. A drain of this
        // replica that owed an earlier moment meanwhile may be overwritten: the sweep then
        // serves it.
        self.drain_log.owe(scope, drained.wake);
        self.drain_log.latencies(&drained, Duration::ZERO);
        Ok(drained)
    }

    /// Runs a registration without an idempotency key on one pooled connection, outside
    /// any transaction: its only write is one statement (see [`registration`]).
    pub(crate) async fn register<T>(
        &self,
        register: impl AsyncFnOnce(
            &mut PgRegistration<PgHeld>,
            &mut ChaCha8Rng,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = PgRegistration::new(PgHeld::acquire(&self.reader).await?, self.clock.now());
        register(&mut tx, &mut crate::fresh_rng()).await
    }

    /// Runs a registration with an idempotency key, in a transaction: on its own, a
    /// claimed key would commit before its answer. A transaction that lost its claim is
    /// run again from the start ([`registration::LostClaim`] says why), a bounded number
    /// of times: each loss means another registration took the operator's last place, so
    /// the next attempt reads fewer free places.
    pub(crate) async fn register_keyed<T>(
        &self,
        register: impl AsyncFn(
            &mut PgRegistration<PgConn<'_>>,
            &mut ChaCha8Rng,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut rng = crate::fresh_rng();
        let mut attempts = 1;
        loop {
            let result = self
                .write(async |conn| {
                    let mut tx = PgRegistration::new(PgConn(conn.0), self.clock.now());
                    register(&mut tx, &mut rng).await
                })
                .await;
            match result {
                Err(StoreError::Unavailable(err))
                    if err.is::<registration::LostClaim>() && attempts < MAX_KEYED_ATTEMPTS =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// Whether the pool answers.
    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        read::health(&self.reader).await
    }

    /// The pool's figures.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        let pool = self.reader.get_postgres_connection_pool();
        read::pool_status(pool.size(), pool.num_idle(), self.max_connections)
    }

    /// Closes the pool.
    pub(crate) async fn shutdown(&self) {
        if let Err(err) = self.reader.close_by_ref().await {
            tracing::warn!(error = %err, "closing the postgres pool failed");
        }
    }
}

async fn migrate(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Commits on success, rolls back on error.
async fn finish<T>(
    txn: DatabaseTransaction,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            txn.commit().await.map_err(db_err)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = txn.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

/// How many times a keyed registration's transaction runs before a lost claim is answered
/// as `Unavailable` (a 503 the client may retry).
const MAX_KEYED_ATTEMPTS: u32 = 16;

/// How long a write on PostgreSQL waits for the drain it triggered before it is answered
/// ([`PgStore::drain_logged`]).
pub const DRAIN_BEFORE_ANSWER: Duration = Duration::from_millis(500);

/// How long a pooled connection may sit idle before it is pinged on checkout.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Default bound on waiting for a pooled connection.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
