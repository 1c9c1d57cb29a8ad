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
    registration::{HotStatements, SourceCache},
};
use crate::conn::sqlite_err;

/// Most jobs committed together.
const MAX_GROUP: usize = 256;

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
}

struct Call<F, T> {
    write: F,
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
        let thread = std::thread::Builder::new()
            .name("crm-sqlite-writer".into())
            .spawn(move || match connect() {
                Ok(conn) => {
                    checkpoint::watch_wal(&conn);
                    let _ = ready_tx.send(Ok(()));
                    let ctx = WriterCtx {
                        conn: &conn,
                        hot: HotStatements::new(&conn),
                        rng,
                        cache: SourceCache::default(),
                    };
                    run(ctx, rx, nudge.as_ref(), &counted, &outcome);
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
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            write,
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

fn stopped() -> StoreError {
    StoreError::Unavailable("the sqlite writer has stopped".into())
}

fn run(
    mut ctx: WriterCtx<'_>,
    mut rx: mpsc::Receiver<Msg>,
    checkpointer: Option<&Thread>,
    reruns: &AtomicU64,
    failing: &AtomicBool,
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
        let commit = run_group(&mut ctx, &mut group, reruns);
        if let Err(err) = &commit {
            tracing::error!(error = %error_chain(err), jobs = group.len(), "sqlite group commit failed");
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

/// Runs `group` in one transaction and commits it (see the module docs). On an error the
/// transaction is rolled back; jobs that had not run are then answered with it. A second
/// run is counted in `reruns`.
fn run_group(
    ctx: &mut WriterCtx<'_>,
    group: &mut [Box<dyn Job>],
    reruns: &AtomicU64,
) -> Result<(), StoreError> {
    if !ctx.conn.is_autocommit() {
        // A transaction left open by a failure before: never build on it.
        tracing::error!("the sqlite writer found a transaction open; rolling it back");
        exec(ctx.conn, "ROLLBACK")?;
    }
    exec(ctx.conn, "BEGIN IMMEDIATE")?;
    // So that a group run again draws as it first did, whatever was drawn in between.
    let rng = ctx.rng.clone();
    let mut undo = None;
    for (i, job) in group.iter_mut().enumerate() {
        let changes = ctx.conn.total_changes();
        let succeeded = job.run(ctx);
        // Some errors (disk full, I/O) end the transaction by themselves.
        let ended = ctx.conn.is_autocommit();
        if ended && succeeded {
            // It went on after its transaction was gone: nothing it did can be trusted.
            tracing::error!("a sqlite write went on after its transaction ended");
            job.fail(StoreError::Internal(
                "the transaction ended under the write".into(),
            ));
        }
        if !succeeded || ended {
            // What it cached may be wrong.
            ctx.cache.clear();
            // Rows are all a job writes (SQLite does not count schema changes).
            if ctx.conn.total_changes() != changes || ended {
                undo = Some(i);
                break;
            }
        }
    }
    if let Some(failed) = undo {
        reruns.fetch_add(1, Ordering::Relaxed);
        if !ctx.conn.is_autocommit() {
            exec(ctx.conn, "ROLLBACK")?;
        }
        ctx.rng = rng;
        exec(ctx.conn, "BEGIN IMMEDIATE")?;
        for (i, job) in group.iter_mut().enumerate() {
            if i != failed {
                run_in_savepoint(ctx, job.as_mut()).map_err(|err| rollback(ctx, err))?;
            }
        }
    }
    exec(ctx.conn, "COMMIT").map_err(|err| rollback(ctx, err))
}

/// Runs `job` inside its own savepoint, which is rolled back if the job fails.
fn run_in_savepoint(ctx: &mut WriterCtx<'_>, job: &mut dyn Job) -> Result<(), StoreError> {
    exec(ctx.conn, "SAVEPOINT job")?;
    if job.run(ctx) {
        exec(ctx.conn, "RELEASE job")
    } else {
        ctx.cache.clear();
        exec(ctx.conn, "ROLLBACK TO job").and_then(|()| exec(ctx.conn, "RELEASE job"))
    }
}

fn rollback(ctx: &mut WriterCtx<'_>, err: StoreError) -> StoreError {
    ctx.cache.clear();
    if !ctx.conn.is_autocommit()
        && let Err(again) = exec(ctx.conn, "ROLLBACK")
    {
        tracing::error!(error = %error_chain(&again), "sqlite rollback failed");
    }
    err
}

/// Runs a transaction-control statement through the connection's prepared-statement
/// cache: they run several times per registration, and parsing them each time showed
/// in the profile (docs/benchmarks.md).
fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(|err| sqlite_err(err).into())
}

#[cfg(test)]
mod tests {
    //! The writer's promises to its callers, on an in-memory database: a full queue is
    //! refused at once, a job that fails (cleanly, after writing, or by panicking) fails
    //! alone, and a stopped writer answers at once. (Group commit under real
    //! registrations: `tests/store_suite.rs`.)

    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;

    /// Long enough for a loaded CI machine; a hang would exceed it by far.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn start(queue: usize) -> Writer {
        Writer::start(Connection::open_in_memory, queue, Some(7), None).expect("writer starts")
    }

    fn insert(ctx: &WriterCtx<'_>, x: i64) -> Result<(), StoreError> {
        ctx.conn
            .execute("INSERT INTO t (x) VALUES (?1)", [x])
            .map(drop)
            .map_err(|err| sqlite_err(err).into())
    }

    async fn answer<T>(pending: impl Future<Output = T>) -> T {
        tokio::time::timeout(PATIENCE, pending)
            .await
            .expect("the writer answers without hanging")
    }

    /// Occupies the writer with a job that waits until the returned sender sends (or is
    /// dropped); returns once that job runs, so the queue is empty behind it.
    async fn hold(
        handle: &WriterHandle,
    ) -> (
        tokio::task::JoinHandle<Result<i64, StoreError>>,
        std_mpsc::Sender<()>,
    ) {
        let (inside_tx, inside) = oneshot::channel();
        let mut inside_tx = Some(inside_tx);
        let (release, release_rx) = std_mpsc::channel::<()>();
        let held = tokio::spawn({
            let handle = handle.clone();
            async move {
                handle
                    .run(move |_| {
                        if let Some(inside) = inside_tx.take() {
                            let _ = inside.send(());
                        }
                        let _ = release_rx.recv();
                        Ok(0)
                    })
                    .await
            }
        });
        answer(inside).await.expect("the holding job runs");
        (held, release)
    }

    /// Waits until `n` jobs wait in the queue.
    async fn queued(handle: &WriterHandle, n: u64) {
        answer(async {
            while handle.queued() < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_queued_jobs_still_run() {
        let writer = start(1);
        let handle = writer.handle.clone();
        let (held, release) = hold(&handle).await;
        // The second takes the queue's one place.
        let second = tokio::spawn({
            let handle = handle.clone();
            async move { handle.run(|_| Ok(2)).await }
        });
        queued(&handle, 1).await;

        let third = answer(handle.run(|_| Ok(3))).await;
        assert!(
            matches!(third, Err(StoreError::Overloaded)),
            "a full queue answers overloaded, got {third:?}"
        );

        release.send(()).expect("the holding job waits");
        assert_eq!(answer(held).await.expect("joined").expect("held"), 0);
        assert_eq!(answer(second).await.expect("joined").expect("second"), 2);
        answer(writer.stop()).await;
    }

    /// What a job of [`one_group`] does.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Does {
        /// Inserts its row and succeeds.
        Succeed,
        /// Returns an error before writing anything.
        FailBeforeWriting,
        /// Inserts its row, then returns an error.
        FailAfterWriting,
        /// Inserts its row, then panics.
        PanicAfterWriting,
        /// Inserts its row, ends the transaction (`ROLLBACK`), and claims success.
        EndTheTransaction,
    }

    /// Queues one job per entry of `does` (job `i` inserts the row `i + 1`) behind a
    /// holding job, so they run as one group; returns their answers, the rows committed
    /// and how many times each job ran.
    async fn one_group(does: &[Does]) -> Group {
        let writer = start(64);
        let handle = writer.handle.clone();
        answer(handle.run(|ctx| {
            ctx.conn
                .execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")
                .map_err(|err| sqlite_err(err).into())
        }))
        .await
        .expect("table created");

        let (held, release) = hold(&handle).await;
        let runs: Vec<Arc<AtomicUsize>> = does.iter().map(|_| Arc::default()).collect();
        let mut jobs = Vec::new();
        for (i, &does) in does.iter().enumerate() {
            let submitter = handle.clone();
            let runs = Arc::clone(&runs[i]);
            let x = i as i64 + 1;
            jobs.push(tokio::spawn(async move {
                submitter
                    .run(move |ctx| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        if does == Does::FailBeforeWriting {
                            return Err(StoreError::NotFound(crm_core::Entity::Source));
                        }
                        insert(ctx, x)?;
                        match does {
                            Does::FailAfterWriting => Err(StoreError::OperatorAtCapacity),
                            Does::PanicAfterWriting => panic!("a bug in job {x}"),
                            Does::EndTheTransaction => {
                                ctx.conn
                                    .execute_batch("ROLLBACK")
                                    .map_err(|err| StoreError::from(sqlite_err(err)))?;
                                Ok(x)
                            }
                            Does::Succeed | Does::FailBeforeWriting => Ok(x),
                        }
                    })
                    .await
            }));
            // One at a time, so they queue in order.
            queued(&handle, i as u64 + 1).await;
        }
        release.send(()).expect("the holding job waits");
        answer(held).await.expect("joined").expect("held");
        let mut answers = Vec::new();
        for job in jobs {
            answers.push(answer(job).await.expect("joined"));
        }
        let stored = answer(handle.run(|ctx| {
            let mut statement = ctx
                .conn
                .prepare("SELECT x FROM t ORDER BY x")
                .map_err(|err| StoreError::from(sqlite_err(err)))?;
            let xs = statement
                .query_map([], |row| row.get::<_, i64>(0))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|err| StoreError::from(sqlite_err(err)))?;
            Ok(xs)
        }))
        .await
        .expect("rows");
        assert!(handle.is_running());
        answer(writer.stop()).await;
        let runs = runs
            .iter()
            .map(|runs| runs.load(Ordering::Relaxed))
            .collect();
        Group {
            answers,
            stored,
            runs,
            reruns: handle.reruns(),
        }
    }

    /// What [`one_group`] saw.
    struct Group {
        answers: Vec<Result<i64, StoreError>>,
        /// The rows committed.
        stored: Vec<i64>,
        /// How many times each job ran.
        runs: Vec<usize>,
        /// The writer's count of groups run again.
        reruns: u64,
    }

    #[tokio::test]
    async fn a_job_failing_before_it_writes_fails_alone_and_nothing_runs_twice() {
        let Group {
            answers,
            stored,
            runs,
            reruns,
        } = one_group(&[Does::Succeed, Does::FailBeforeWriting, Does::Succeed]).await;
        assert!(
            matches!(answers[..], [Ok(1), Err(StoreError::NotFound(_)), Ok(3)]),
            "{answers:?}"
        );
        assert_eq!(stored, [1, 3]);
        assert_eq!(runs, [1, 1, 1]);
        assert_eq!(reruns, 0);
    }

    #[tokio::test]
    async fn a_job_failing_after_it_wrote_is_undone_and_the_others_run_again() {
        let Group {
            answers,
            stored,
            runs,
            reruns,
        } = one_group(&[Does::Succeed, Does::FailAfterWriting, Does::Succeed]).await;
        assert!(
            matches!(
                answers[..],
                [Ok(1), Err(StoreError::OperatorAtCapacity), Ok(3)]
            ),
            "{answers:?}"
        );
        assert_eq!(stored, [1, 3]);
        // The first ran before the failure and again in the savepoint run; the failed
        // job is not run again; the third ran only in the savepoint run.
        assert_eq!(runs, [2, 1, 1]);
        assert_eq!(reruns, 1);
    }

    #[tokio::test]
    async fn a_job_panicking_after_it_wrote_is_undone_and_the_others_run_again() {
        let Group {
            answers,
            stored,
            runs,
            reruns,
        } = one_group(&[Does::Succeed, Does::PanicAfterWriting, Does::Succeed]).await;
        assert!(
            matches!(answers[..], [Ok(1), Err(StoreError::Internal(_)), Ok(3)]),
            "the panicking job fails as an internal error: {answers:?}"
        );
        assert_eq!(stored, [1, 3]);
        assert_eq!(runs, [2, 1, 1]);
        assert_eq!(reruns, 1);
    }

    /// In the savepoint run a job that fails after writing is rolled back to its own
    /// savepoint, alone.
    #[tokio::test]
    async fn a_second_failure_in_the_savepoint_run_is_undone_alone() {
        let Group {
            answers,
            stored,
            runs,
            reruns,
        } = one_group(&[
            Does::Succeed,
            Does::FailAfterWriting,
            Does::FailAfterWriting,
            Does::FailBeforeWriting,
            Does::Succeed,
        ])
        .await;
        assert!(
            matches!(
                answers[..],
                [
                    Ok(1),
                    Err(StoreError::OperatorAtCapacity),
                    Err(StoreError::OperatorAtCapacity),
                    Err(StoreError::NotFound(_)),
                    Ok(5)
                ]
            ),
            "{answers:?}"
        );
        assert_eq!(stored, [1, 5]);
        assert_eq!(runs, [2, 1, 1, 1, 1]);
        assert_eq!(reruns, 1, "the savepoint run is not run again");
    }

    /// A job that ends the group's transaction under the others (and claims success) is
    /// answered as failed, and the others are run again in a new transaction: their
    /// writes are not lost with the old one, nor committed one by one.
    #[tokio::test]
    async fn a_job_ending_the_transaction_fails_and_the_others_run_again() {
        let Group {
            answers,
            stored,
            runs,
            reruns,
        } = one_group(&[Does::Succeed, Does::EndTheTransaction, Does::Succeed]).await;
        assert!(
            matches!(answers[..], [Ok(1), Err(StoreError::Internal(_)), Ok(3)]),
            "{answers:?}"
        );
        assert_eq!(stored, [1, 3]);
        assert_eq!(runs, [2, 1, 1]);
        assert_eq!(reruns, 1);
    }

    /// A failed commit's answer names SQLite's own reason, not only "unavailable": the
    /// API logs the cause of a 503, and "store is unavailable" alone helps nobody.
    #[test]
    fn a_failed_commit_answers_with_its_cause() {
        let (reply, mut answer) = oneshot::channel::<Result<(), StoreError>>();
        let job = Box::new(Call {
            write: |_: &mut WriterCtx<'_>| Ok(()),
            result: Some(Ok(())),
            reply,
        });
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let commit = StoreError::from(sqlite_err(full));
        job.complete(Err(&commit));
        let Ok(Err(StoreError::Unavailable(cause))) = answer.try_recv() else {
            panic!("a failed commit answers unavailable");
        };
        let text = error_chain(cause.as_ref());
        assert!(
            text.contains("commit failed") && text.contains("database or disk is full"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_stopped_writer_answers_unavailable_at_once() {
        let writer = start(16);
        let handle = writer.handle.clone();
        answer(writer.stop()).await;
        assert!(!handle.is_running());
        let late = answer(handle.run(|_| Ok(()))).await;
        assert!(
            matches!(late, Err(StoreError::Unavailable(_))),
            "got {late:?}"
        );
    }
}
