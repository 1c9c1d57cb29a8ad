//! The SQLite backend: one writer thread (see [`writer`]) for every write, a read-only
//! pool for reads, and an exclusive `flock` on the database file itself so that only one
//! process writes it.

pub mod checkpoint;
pub mod outbox;
pub mod registration;
mod source_cache;
pub mod writer;

use std::{
    fs::File,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use crm_core::{ContactId, PoolStatus, StoreError};
use migration::{Migrator, MigratorTrait};
use rand_chacha::ChaCha8Rng;
use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::{
    ConnectError, SqliteUrl, StoreConfig,
    clock::Clock,
    conn::SqliteConn,
    drain::{self, DrainLog, Scope},
    ops, read,
};
use checkpoint::Checkpointer;
use registration::SqliteRegistration;
use source_cache::SourceCache;
use writer::{Writer, WriterHandle};

/// Prepared statements the writer keeps: more than it has.
const STATEMENT_CACHE: usize = 96;
/// The writer's page cache, in KiB (SQLite's default is 2,000 KiB, `-2000`). A registration looks up
/// a returning lead and inserts into the contacts' lead index at that lead's place: two
/// random pages, which a 2 MB cache missed about once per registration (a `pread` each).
/// 8 MiB keeps those indexes hot for ~700,000 contacts; it is memory the writer only
/// uses as the database grows into it.
const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// The SQLite backend: every write a job of the one writer thread, every read on the
/// read-only pool beside it.
pub struct SqliteStore {
    /// Read-only pool.
    pub(crate) reader: DatabaseConnection,
    pub(crate) max_connections: u32,
    pub(crate) handle: WriterHandle,
    writer: Mutex<Option<Writer>>,
    /// The time registrations and drains run at.
    pub(crate) clock: Clock,
    /// The drain owed to a refilling pace bucket, and the drains' latencies.
    pub(crate) drain_log: Arc<DrainLog>,
    /// Retries a write while the last commit failed ([`writer::probe`]).
    _probe: AbortOnDrop,
    /// The `flock` on the database file ([`lock`]): last, so it is closed after the
    /// fields above, which stop SQLite's own connections. Held for the life of the store;
    /// the kernel releases it when the process dies.
    _lock: File,
}

/// A drain inside a writer job, at the store's clock. The moment it owes is noted at once,
/// in the writer, in order with the other jobs' (a registration's wake-up after it must not
/// be overwritten by it). Its latencies are noted only once the job's group has committed
/// ([`Drainer::committed`]): a group the writer runs again (one of its jobs failed after
/// writing) drains again, and only its last run counts; a group that fails to commit
/// drained nothing. They then run until the commit.
#[derive(Clone)]
struct Drainer {
    clock: Clock,
    log: Arc<DrainLog>,
    /// What the current run of this job drained, and when that drain ended.
    last: Arc<Mutex<Option<(drain::Drained, Instant)>>>,
}

impl Drainer {
    /// At the start of each run of the job: a run again forgets the first run's drain.
    fn begin(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn drain(
        &self,
        conn: &SqliteConn<'_>,
        scope: Scope,
    ) -> Result<drain::Drained, StoreError> {
        let drained =
            drain::drain_here(conn, scope, self.clock.now(), &mut crate::fresh_rng()).await?;
        self.log.owe(scope, drained.wake);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((drained.clone(), Instant::now()));
        Ok(drained)
    }

    /// After the job's group committed: notes the latencies of the job's last run.
    fn committed(&self) {
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((drained, ended)) = last {
            self.log.latencies(&drained, ended.elapsed());
        }
    }
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes an exclusive `flock` on the database file itself (creating the file, empty, if
/// it does not exist: SQLite reads an empty file as an empty database); returns the open
/// file that holds the lock.
///
/// The lock belongs to the open file, so it is the same whatever path, symlink or hard
/// link reached it, and the kernel releases it when the process dies. It does not
/// conflict with the `fcntl` locks SQLite takes on the same file. But closing *any*
/// descriptor of a file drops every `fcntl` lock the process holds on it, so the returned
/// file must stay open until SQLite's own connections to it have closed.
pub fn lock(url: &SqliteUrl) -> Result<File, ConnectError> {
    let display = || url.path().display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(url.path())
        .map_err(|source| ConnectError::Io {
            path: display(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ConnectError::InUse(display())),
        Err(std::fs::TryLockError::Error(source)) => Err(ConnectError::Io {
            path: display(),
            source,
        }),
    }
}

/// Opens (creating if needed) and migrates the database, then starts the writer.
pub async fn open(url: &SqliteUrl, config: &StoreConfig) -> Result<SqliteStore, ConnectError> {
    let lock = lock(url)?;
    let display = url.path().display().to_string();

    let admin = sea_orm::Database::connect(
        ConnectOptions::new(url.with_mode("rwc"))
            .max_connections(1)
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .map_err(|err| ConnectError::Database(Box::new(err)))?;
    admin
        .execute_unprepared("PRAGMA journal_mode = WAL")
        .await
        .map_err(|err| ConnectError::Database(Box::new(err)))?;
    // In one transaction (SQLite's DDL is transactional): a crash mid-migration leaves
    // the schema as it was, never tables without their row in `seaql_migrations`.
    let migrated = async {
        let txn = admin.begin().await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await
    };
    migrated
        .await
        .map_err(|err| ConnectError::Migration(Box::new(err)))?;
    admin
        .close()
        .await
        .map_err(|err| ConnectError::Database(Box::new(err)))?;

    let synchronous = if config.sqlite_synchronous_normal {
        "NORMAL"
    } else {
        "FULL"
    };
    let open_rw = move |path: String| {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        ))?;
        Ok::<_, rusqlite::Error>(conn)
    };
    let path = display.clone();
    let checkpointer =
        Checkpointer::start(move || open_rw(path)).map_err(|source| ConnectError::Io {
            path: display.clone(),
            source,
        })?;
    let path = display.clone();
    let connect = move || {
        let conn = open_rw(path)?;
        // Every statement the writer runs stays prepared (there are about forty).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))?;
        Ok(conn)
    };
    let writer = Writer::start(connect, config.write_queue, config.seed, Some(checkpointer))
        .map_err(|err| ConnectError::Database(Box::new(err)))?;

    // Every read connection is opened now and kept for the life of the process: SQLite
    // 3.51.1 (the bundled one) can deadlock when one connection to a WAL file closes while
    // another to the same file opens in the same process (`unixLock` holds the file's inode
    // mutex and asks for the VFS mutex, `findReusableFd` the other way round; a hung test
    // run showed it). sqlx's pool otherwise opens connections on demand and closes them
    // after ten idle minutes.
    let reader = sea_orm::Database::connect(
        ConnectOptions::new(url.with_mode("ro"))
            .max_connections(config.max_connections)
            .min_connections(config.max_connections)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(config.acquire_timeout)
            // A file does not hang up: sqlx's ping on every checkout would only cost
            // each read a trip to the connection's thread.
            .test_before_acquire(false)
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .map_err(|err| ConnectError::Database(Box::new(err)))?;
    let pool = reader.get_sqlite_connection_pool();
    let mut held = Vec::new();
    for _ in 0..config.max_connections {
        held.push(
            pool.acquire()
                .await
                .map_err(|err| ConnectError::Database(Box::new(err)))?,
        );
    }
    drop(held);

    let handle = writer.handle.clone();
    Ok(SqliteStore {
        reader,
        max_connections: config.max_connections,
        _probe: AbortOnDrop(tokio::spawn(writer::probe(handle.clone()))),
        handle,
        writer: Mutex::new(Some(writer)),
        clock: config.clock.clone(),
        drain_log: Arc::default(),
        _lock: lock,
    })
}

impl SqliteStore {
    /// Runs `write` as a job of the writer (atomic, undone alone if it fails), over the
    /// writer's connection; its future is ready at once. Any write but a registration or
    /// a close may change what the source cache holds, so the cache is emptied after it.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        write: impl AsyncFnMut(&SqliteConn<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_then(write, |cache, _| cache.clear()).await
    }

    /// [`Self::write`], after which `then` brings the source cache up to date from the
    /// write's result (a job that fails empties the cache anyway, see [`writer`]).
    async fn write_then<T: Send + 'static>(
        &self,
        mut write: impl AsyncFnMut(&SqliteConn<'_>) -> Result<T, StoreError> + Send + 'static,
        then: impl Fn(&mut SourceCache, &T) + Send + 'static,
    ) -> Result<T, StoreError> {
        self.handle
            .run(move |ctx| {
                let out = pollster::block_on(write(&SqliteConn::new(ctx.conn, &ctx.pending)))?;
                then(&mut ctx.cache, &out);
                Ok(out)
            })
            .await
    }

    /// [`Self::write`], then a drain of `scope(&result)` in the same job, right after the
    /// write that freed or added capacity: one unit of work, so a client that got the
    /// write's answer finds the queue drained.
    pub(crate) async fn write_draining<T: Send + 'static>(
        &self,
        mut write: impl AsyncFnMut(&SqliteConn<'_>) -> Result<T, StoreError> + Send + 'static,
        scope: impl Fn(&T) -> Option<Scope> + Send + 'static,
    ) -> Result<T, StoreError> {
        let drainer = self.drainer();
        let job = drainer.clone();
        let out = self
            .write(async move |conn| {
                job.begin();
                let out = write(conn).await?;
                if let Some(scope) = scope(&out) {
                    job.drain(conn, scope).await?;
                }
                Ok(out)
            })
            .await?;
        drainer.committed();
        Ok(out)
    }

    /// Drains every source's queue: the sweep, and the drain owed to a refilling bucket.
    /// Every source is looked at, alone (the writer's jobs run one at a time), so what it
    /// owes replaces what was owed.
    pub(crate) async fn drain_all(&self) -> Result<drain::Drained, StoreError> {
        let drainer = self.drainer();
        let job = drainer.clone();
        let drained = self
            .write(async move |conn| {
                job.begin();
                job.drain(conn, Scope::All).await
            })
            .await?;
        drainer.committed();
        Ok(drained)
    }

    /// What a job needs to drain the queue in the writer.
    fn drainer(&self) -> Drainer {
        Drainer {
            clock: self.clock.clone(),
            log: Arc::clone(&self.drain_log),
            last: Arc::default(),
        }
    }

    /// Closes a contact and drains the queue of the sources its operator serves. The source
    /// cache follows: one counter released, then what the drain claimed and saw.
    pub(crate) async fn close_contact(&self, id: ContactId) -> Result<ops::Closed, StoreError> {
        let drainer = self.drainer();
        let job = drainer.clone();
        // The close, with what the drain of its operator's sources did.
        let close = async move |conn: &SqliteConn<'_>| {
            job.begin();
            let closed = ops::close_contact(conn, id).await?;
            let drained = match closed.released() {
                Some(operator) => Some(job.drain(conn, Scope::Operator(operator)).await?),
                None => None,
            };
            Ok((closed, drained))
        };
        let (closed, _) = self
            .write_then(close, |cache, (closed, drained)| {
                match (closed.released(), drained) {
                    (Some(operator), Some(drained)) => {
                        cache.released(operator);
                        cache.drained(drained);
                    }
                    // A waiting contact closed (or one closed already): its source's queue
                    // may be empty now.
                    _ => cache.clear(),
                }
            })
            .await?;
        drainer.committed();
        Ok(closed)
    }

    /// Runs a registration (with or without a key: the writer runs one unit of work at a
    /// time, so a key needs nothing more) as a job of the writer, with its generator.
    pub(crate) async fn register<T: Send + 'static>(
        &self,
        mut register: impl AsyncFnMut(
            &mut SqliteRegistration<'_, '_>,
            &mut ChaCha8Rng,
        ) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let Drainer { clock, log, .. } = self.drainer();
        self.handle
            .run_registration(move |ctx| {
                // No drain follows a contact stored waiting: it would find nobody eligible.
                // The writer is the only one (the file is locked), and every job that frees
                // or adds capacity drains before it ends, so after each job no waiting contact
                // has an eligible operator; a registration adds none. Only time does, by
                // refilling a paced operator's bucket: the timer owes a drain then.
                let tx = &mut SqliteRegistration::new(
                    &mut ctx.hot,
                    &mut ctx.cache,
                    &ctx.pending,
                    clock.now(),
                );
                let out = pollster::block_on(register(tx, &mut ctx.rng));
                log.timer.arm(tx.wake);
                out
            })
            .await
    }

    /// Whether the writer runs and its last commit succeeded, and the pool answers.
    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        self.handle.health()?;
        read::health(&self.reader).await
    }

    /// The read pool's figures and the writer's queue.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        let pool = self.reader.get_sqlite_connection_pool();
        PoolStatus {
            queued_writes: Some(self.handle.queued()),
            write_group_reruns: Some(self.handle.reruns()),
            ..read::pool_status(pool.size(), pool.num_idle(), self.max_connections)
        }
    }

    /// Stops taking writes, commits what is queued and answers it.
    pub(crate) async fn shutdown(&self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            writer.stop().await;
        }
    }
}
