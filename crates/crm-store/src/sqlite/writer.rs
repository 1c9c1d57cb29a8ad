//! The SQLite writer: one thread owns the only read-write connection and applies every
//! write, in groups: one transaction per group, answered only after that transaction
//! commits, so a reply of success means durably stored (at the default
//! `synchronous = FULL` the commit returns once the WAL is synced).
//!
//! Each job is atomic and one failing job never spoils its group. A savepoint per job
//! would give that directly, but costs every job two statements and a copy of each page
//! it touches into the savepoint's journal (~14 % of the writer's instructions per
//! registration), to undo what almost never needs undoing: jobs that fail nearly always
//! fail before writing anything (unknown source, key reused, validation). So a group
//! first runs its jobs one after another with no savepoint. If a job fails after it
//! changed a row (SQLite's change counter moved), or its failure ended the transaction,
//! the whole transaction is rolled back and the group runs again with a savepoint per
//! job, without the failed job, whose answer is its failure. Nothing is answered before
//! the commit, so the first run is never seen; jobs are therefore written to be run more
//! than once (`FnMut`, borrowing what they capture).
//!
//! Because this thread is the only writer (the process holds an exclusive lock file, see
//! `super::open`), `SQLITE_BUSY` cannot happen and a read-then-write inside a job sees no
//! interleaving.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    thread::{JoinHandle, Thread},
    time::Duration,
};

use crm_core::{StoreError, error_chain};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{
    checkpoint::{self, Checkpointer},
    outbox::{Pending, Tail},
    registration::HotStatements,
    source_cache::SourceCache,
};
use crate::conn::sqlite_err;

/// Most jobs committed together.
const MAX_GROUP: usize = 256;

/// The newest event stored and retention's mark: where the outbox's [`Tail`] starts.
const TAIL_START: &str = "SELECT COALESCE((SELECT MAX(seq) FROM events), 0), \
     (SELECT pruned_through FROM event_log WHERE id = 1)";

/// How often [`probe`] tries a write while the last commit has failed.
pub const PROBE_EVERY: Duration = Duration::from_secs(3);

/// What a job gets to work with.
pub struct WriterCtx<'c> {
    /// The read-write connection, inside the group's transaction.
    pub conn: &'c Connection,
    /// The registration's statements, prepared once on `conn`.
    pub hot: HotStatements<'c>,
    /// The generator behind every automatic assignment.
    pub rng: ChaCha8Rng,
    /// What registrations keep of their sources (see [`SourceCache`]).
    pub cache: SourceCache,
    /// The events the group's transaction has inserted: taken after every group, and
    /// handed to the [`Tail`] when it committed (so each group starts with none).
    pub pending: Pending,
}

/// A queued write: run (perhaps twice, see the module docs) inside the group's
/// transaction, then answered once the group's commit is known.
trait Job: Send {
    /// Runs the write; whether it succeeded.
    fn run(&mut self, ctx: &mut WriterCtx<'_>) -> bool;
    /// Replaces the last run's result with `err`.
    fn fail(&mut self, err: StoreError);
    /// Answers the requester with the last run's result and the group's commit.
    fn complete(self: Box<Self>, commit: Result<(), &StoreError>);
    /// Whether the job works from the source cache alone (a registration), so that the
    /// smooth credits the cache holds unwritten need not be in the rows before it runs.
    fn uses_cache(&self) -> bool;
}

struct Call<F, T> {
    write: F,
    /// See [`Job::uses_cache`].
    uses_cache: bool,
    /// The last run's result; `None` until it runs.
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Call<F, T>
where
    F: FnMut(&mut WriterCtx<'_>) -> Result<T, StoreError> + Send,
    T: Send,
{
    fn run(&mut self, ctx: &mut WriterCtx<'_>) -> bool {
        // A panicking job is a bug in that job: it fails alone (what it wrote is undone
        // like any failed job's) instead of taking the writer, and with it every later
        // write, down with it.
        let result =
            panic::catch_unwind(AssertUnwindSafe(|| (self.write)(ctx))).unwrap_or_else(|_| {
                tracing::error!("a sqlite write panicked; it was rolled back");
                Err(StoreError::Internal("the write panicked".into()))
            });
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn fail(&mut self, err: StoreError) {
        self.result = Some(Err(err));
    }

    fn complete(self: Box<Self>, commit: Result<(), &StoreError>) {
        let result = match (self.result, commit) {
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(err)) => Err(StoreError::Unavailable(
                format!("commit failed: {}", error_chain(err)).into(),
            )),
            // Cannot happen: every job of a committed group has run.
            (None, Ok(())) => Err(StoreError::Internal("the write never ran".into())),
        };
        // The requester may have gone away (client disconnected); the write stands.
        let _ = self.reply.send(result);
    }

    fn uses_cache(&self) -> bool {
        self.uses_cache
    }
}

enum Msg {
    Job(Box<dyn Job>),
    /// Finish what is queued, then stop.
    Stop,
}

/// The handle requests use to reach the writer. Cloning is cheap.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    /// Groups run a second time because a job failed after writing (see the module docs).
    reruns: Arc<AtomicU64>,
    /// Whether the last commit that had something to write failed (its reason is in the
    /// log line of the failure).
    failing: Arc<AtomicBool>,
    /// The newest committed events.
    tail: Arc<Tail>,
}

/// Why the writer did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No thread.
    #[error("cannot start the sqlite writer thread")]
    Spawn(#[source] std::io::Error),
    /// No connection.
    #[error("cannot open the sqlite database for writing")]
    Connect(#[source] rusqlite::Error),
}

/// The running writer thread.
pub struct Writer {
    /// Submits jobs.
    pub handle: WriterHandle,
    thread: JoinHandle<()>,
    checkpointer: Option<Checkpointer>,
}

impl Writer {
    /// Starts the thread, which opens its connection with `connect` (on the thread that
    /// uses it), with a queue of at most `queue` waiting jobs. The writer nudges
    /// `checkpointer` as the WAL grows (see [`checkpoint`]) and stops it when it stops.
    ///
    /// # Errors
    /// The thread could not be spawned, or `connect` failed.
    pub fn start<C>(
        connect: C,
        queue: usize,
        seed: Option<u64>,
        checkpointer: Option<Checkpointer>,
    ) -> Result<Self, StartError>
    where
        C: FnOnce() -> Result<Connection, rusqlite::Error> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Msg>(queue);
        let rng = match seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::seed_from_u64(rand::random()),
        };
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let nudge = checkpointer.as_ref().map(Checkpointer::handle);
        let reruns = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&reruns);
        let failing = Arc::new(AtomicBool::new(false));
        let outcome = Arc::clone(&failing);
        let tail = Arc::new(Tail::default());
        let published = Arc::clone(&tail);
        let thread = std::thread::Builder::new()
            .name("crm-sqlite-writer".into())
            .spawn(move || match connect() {
                Ok(conn) => {
                    checkpoint::watch_wal(&conn);
                    start_tail(&conn, &published);
                    let _ = ready_tx.send(Ok(()));
                    let ctx = WriterCtx {
                        conn: &conn,
                        hot: HotStatements::new(&conn),
                        rng,
                        cache: SourceCache::default(),
                        pending: Pending::default(),
                    };
                    run(ctx, rx, nudge.as_ref(), &counted, &outcome, &published);
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })
            .map_err(StartError::Spawn)?;
        let failed = match ready_rx.recv() {
            Ok(Ok(())) => {
                return Ok(Self {
                    handle: WriterHandle {
                        tx,
                        reruns,
                        failing,
                        tail,
                    },
                    thread,
                    checkpointer,
                });
            }
            Ok(Err(err)) => StartError::Connect(err),
            Err(_) => StartError::Spawn(std::io::Error::other(
                "the writer thread died while connecting",
            )),
        };
        if let Some(checkpointer) = checkpointer {
            checkpointer.stop();
        }
        Err(failed)
    }

    /// Stops accepting jobs, and waits until the queued ones are committed and answered.
    pub async fn stop(self) {
        // Queued behind every job accepted so far; if the writer is gone already, fine.
        let _ = self.handle.tx.send(Msg::Stop).await;
        let thread = self.thread;
        let checkpointer = self.checkpointer;
        let joined = tokio::task::spawn_blocking(move || {
            let joined = thread.join();
            if let Some(checkpointer) = checkpointer {
                checkpointer.stop();
            }
            joined
        })
        .await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the sqlite writer thread panicked");
        }
    }
}

impl WriterHandle {
    /// Runs `write` on the writer, atomically, and returns its result once the group it
    /// ran in has committed. `write` may run twice (see the module docs): it must not
    /// consume what it captures.
    ///
    /// # Errors
    /// The job's own error; [`StoreError::Overloaded`] when the queue is full;
    /// [`StoreError::Unavailable`] when the writer has stopped or the commit failed.
    pub async fn run<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut WriterCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(write, false).await
    }

    /// [`Self::run`] for a registration: a job that reads the sources it names from the
    /// source cache, and may leave smooth credits there unwritten (see [`SourceCache`]).
    ///
    /// # Errors
    /// As [`Self::run`].
    pub async fn run_registration<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut WriterCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(write, true).await
    }

    async fn submit<T, F>(&self, write: F, uses_cache: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut WriterCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            write,
            uses_cache,
            result: None,
            reply,
        });
        self.tx.try_send(Msg::Job(job)).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        answer.await.map_err(|_| stopped())?
    }
}

impl WriterHandle {
    /// Jobs waiting in the queue now.
    #[must_use]
    pub fn queued(&self) -> u64 {
        (self.tx.max_capacity() - self.tx.capacity()) as u64
    }

    /// Groups run a second time, with a savepoint per job, because one of their jobs
    /// failed after writing, since the writer started. Each costs the group's work twice,
    /// so a count that keeps rising names a write that should fail before writing.
    #[must_use]
    pub fn reruns(&self) -> u64 {
        self.reruns.load(Ordering::Relaxed)
    }

    /// The newest events the writer committed.
    #[must_use]
    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    /// Whether the writer still takes jobs (it stops on shutdown).
    #[must_use]
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Whether writes work, as far as the writer knows: it is running and its last
    /// commit that had something to write (a group's, or [`probe`]'s) succeeded.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], whose cause says which of the two failed, in words
    /// fit for `/health`'s anonymous callers (SQLite's own reason goes to the log).
    pub fn health(&self) -> Result<(), StoreError> {
        if !self.is_running() {
            return Err(stopped());
        }
        if self.failing.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                format!(
                    "the last write to the database failed; a write probe retries every {} s",
                    PROBE_EVERY.as_secs()
                )
                .into(),
            ));
        }
        Ok(())
    }
}

/// While the writer runs: every [`PROBE_EVERY`], if its last commit failed, commits a
/// write that changes nothing (SQLite's `user_version`, set to what it is, which still
/// writes the header page to the WAL). A commit that succeeds, the probe's or a request's,
/// makes the writer healthy again, so a node that a load balancer took out of rotation
/// (it sends no writes) comes back once the disk does.
pub async fn probe(handle: WriterHandle) {
    while handle.is_running() {
        tokio::time::sleep(PROBE_EVERY).await;
        if handle.failing.load(Ordering::Acquire) {
            let probed = handle
                .run(|ctx| {
                    let version: i64 = ctx
                        .conn
                        .query_row("PRAGMA user_version", [], |row| row.get(0))
                        .map_err(|err| StoreError::from(sqlite_err(err)))?;
                    ctx.conn
                        .execute_batch(&format!("PRAGMA user_version = {version}"))
                        .map_err(|err| sqlite_err(err).into())
                })
                .await;
            match probed {
                Ok(()) => tracing::info!("sqlite writes work again"),
                Err(err) => tracing::warn!(error = %error_chain(&err), "sqlite write probe failed"),
            }
        }
    }
}

/// Starts `tail` after the newest event stored. Without an outbox (a test's bare
/// database) it does not start, and its readers read the database.
fn start_tail(conn: &Connection, tail: &Tail) {
    let read = conn.query_row(TAIL_START, [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    });
    match read {
        Ok((newest, mark)) => tail.start(newest.unsigned_abs(), mark.unsigned_abs()),
        Err(err) => tracing::debug!(error = %err, "no outbox to keep the newest events of"),
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the sqlite writer has stopped".into())
}

fn run(
    mut ctx: WriterCtx<'_>,
    mut rx: mpsc::Receiver<Msg>,
    checkpointer: Option<&Thread>,
    reruns: &AtomicU64,
    failing: &AtomicBool,
    tail: &Tail,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        // After `close`, the receiver still yields what was queued, then `None`.
        match first {
            Msg::Job(job) => group.push(job),
            Msg::Stop => {
                rx.close();
                continue;
            }
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => group.push(job),
                Ok(Msg::Stop) => rx.close(),
                Err(_) => break,
            }
        }
        let commits = checkpoint::wal_commits();
        let commit = group::run(&mut ctx, &mut group, reruns);
        let written = ctx.pending.take();
        match &commit {
            // Before anyone is answered: a client that has its answer finds its event.
            // After a failed commit it is not kept: it starts from what the database holds.
            Ok(()) => {
                if !tail.publish(written) {
                    start_tail(ctx.conn, tail);
                }
            }
            Err(err) => {
                tracing::error!(error = %error_chain(err), jobs = group.len(), "sqlite group commit failed");
                // An I/O error can leave a commit's outcome unknown; the readers read
                // the database until a commit succeeds again.
                tail.stop();
            }
        }
        // Before answering, so that a request answered 503 finds `/health` failing too.
        // Only a commit that wrote to the WAL shows that writes work again.
        let wrote = checkpoint::wal_commits() != commits;
        if commit.is_err() || wrote {
            failing.store(commit.is_err(), Ordering::Release);
        }
        for job in group.drain(..) {
            job.complete(commit.as_ref().map(|_| ()));
        }
        // After answering: the group's requests do not wait for this.
        let frames = checkpoint::wal_frames();
        if frames >= checkpoint::WAL_RESTART_FRAMES {
            checkpoint::checkpoint_remainder(ctx.conn);
        } else if frames >= checkpoint::NUDGE_FRAMES
            && let Some(checkpointer) = checkpointer
        {
            checkpointer.unpark();
        }
    }
    tracing::debug!("sqlite writer drained and stopped");
}

mod group;

#[cfg(test)]
mod credit_tests;
#[cfg(test)]
mod tests;
