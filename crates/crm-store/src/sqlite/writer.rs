//! The SQLite writer: one thread owns the only read-write connection and applies every
//! write, in groups. Each job runs inside its own savepoint (so one failing job never
//! spoils its group) within one transaction per group, and is answered only after that
//! transaction commits: a reply of success means durably stored (at the default
//! `synchronous = FULL` the commit returns once the WAL is synced).
//!
//! Because this thread is the only writer (the process holds an exclusive lock file, see
//! `super::open`), `SQLITE_BUSY` cannot happen and a read-then-write inside a job sees no
//! interleaving.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::mpsc as std_mpsc,
    thread::{JoinHandle, Thread},
};

use crm_core::StoreError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{
    checkpoint::{self, Checkpointer},
    registration::SourceCache,
};
use crate::conn::sqlite_err;

/// Most jobs committed together.
const MAX_GROUP: usize = 256;

/// What a job gets to work with.
pub struct WriterCtx {
    /// The read-write connection, inside the group's transaction and the job's savepoint.
    pub conn: Connection,
    /// The generator behind every automatic assignment.
    pub rng: ChaCha8Rng,
    /// What registrations keep of their sources (see [`SourceCache`]).
    pub cache: SourceCache,
}

/// A job's outcome waiting for its group's commit.
trait Pending: Send {
    fn succeeded(&self) -> bool;
    fn complete(self: Box<Self>, commit: Result<(), &StoreError>);
}

struct Reply<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Pending for Reply<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn complete(self: Box<Self>, commit: Result<(), &StoreError>) {
        let result = match (self.result, commit) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(err)) => Err(StoreError::Unavailable(
                format!("commit failed: {err}").into(),
            )),
            (Err(err), _) => Err(err),
        };
        // The requester may have gone away (client disconnected); the write stands.
        let _ = self.reply.send(result);
    }
}

type Job = Box<dyn FnOnce(&mut WriterCtx) -> Box<dyn Pending> + Send>;

enum Msg {
    Job(Job),
    /// Finish what is queued, then stop.
    Stop,
}

/// The handle requests use to reach the writer. Cloning is cheap.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
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
        let thread = std::thread::Builder::new()
            .name("crm-sqlite-writer".into())
            .spawn(move || match connect() {
                Ok(conn) => {
                    checkpoint::watch_wal(&conn);
                    let _ = ready_tx.send(Ok(()));
                    let ctx = WriterCtx {
                        conn,
                        rng,
                        cache: SourceCache::default(),
                    };
                    run(ctx, rx, nudge.as_ref());
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })
            .map_err(StartError::Spawn)?;
        let failed = match ready_rx.recv() {
            Ok(Ok(())) => {
                return Ok(Self {
                    handle: WriterHandle { tx },
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
    /// Runs `job` on the writer inside its own savepoint and returns its result once the
    /// group it ran in has committed.
    ///
    /// # Errors
    /// The job's own error; [`StoreError::Overloaded`] when the queue is full;
    /// [`StoreError::Unavailable`] when the writer has stopped or the commit failed.
    pub async fn run<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterCtx) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |ctx| {
            // A panicking job is a bug in that job: it fails alone (its savepoint is rolled
            // back like any failed job's) instead of taking the writer, and with it every
            // later write, down with it.
            let result = panic::catch_unwind(AssertUnwindSafe(|| job(ctx))).unwrap_or_else(|_| {
                tracing::error!("a sqlite write panicked; it was rolled back");
                Err(StoreError::Internal("the write panicked".into()))
            });
            Box::new(Reply { result, reply })
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

    /// Whether the writer still takes jobs (it stops on shutdown).
    #[must_use]
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the sqlite writer has stopped".into())
}

fn run(mut ctx: WriterCtx, mut rx: mpsc::Receiver<Msg>, checkpointer: Option<&Thread>) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut done: Vec<Box<dyn Pending>> = Vec::with_capacity(MAX_GROUP);
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
        let commit = run_group(&mut ctx, &mut group, &mut done);
        if let Err(err) = &commit {
            tracing::error!(error = %err, jobs = done.len(), "sqlite group commit failed");
        }
        for pending in done.drain(..) {
            pending.complete(commit.as_ref().map(|_| ()));
        }
        // After answering: the group's requests do not wait for this.
        let frames = checkpoint::wal_frames();
        if frames >= checkpoint::WAL_RESTART_FRAMES {
            checkpoint::checkpoint_remainder(&ctx.conn);
        } else if frames >= checkpoint::NUDGE_FRAMES
            && let Some(checkpointer) = checkpointer
        {
            checkpointer.unpark();
        }
    }
    tracing::debug!("sqlite writer drained and stopped");
}

fn run_group(
    ctx: &mut WriterCtx,
    group: &mut Vec<Job>,
    done: &mut Vec<Box<dyn Pending>>,
) -> Result<(), StoreError> {
    // Jobs that never ran are dropped with their reply senders: their requesters get
    // 503 unavailable, which is the truth for a group that could not be written.
    if let Err(err) = exec(&ctx.conn, "BEGIN IMMEDIATE") {
        group.clear();
        return Err(err);
    }
    for job in group.drain(..) {
        if let Err(err) = exec(&ctx.conn, "SAVEPOINT job") {
            return Err(rollback(ctx, err));
        }
        let pending = job(ctx);
        let end = if pending.succeeded() {
            exec(&ctx.conn, "RELEASE job")
        } else {
            // What the job changed is undone, so what it cached may be wrong.
            ctx.cache.clear();
            exec(&ctx.conn, "ROLLBACK TO job").and_then(|()| exec(&ctx.conn, "RELEASE job"))
        };
        done.push(pending);
        if let Err(err) = end {
            return Err(rollback(ctx, err));
        }
    }
    exec(&ctx.conn, "COMMIT").map_err(|err| rollback(ctx, err))
}

fn rollback(ctx: &mut WriterCtx, err: StoreError) -> StoreError {
    ctx.cache.clear();
    if let Err(again) = exec(&ctx.conn, "ROLLBACK") {
        tracing::error!(error = %again, "sqlite rollback failed");
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
    //! refused at once, a panicking job fails alone, and a stopped writer answers at once.
    //! (Group commit and savepoints under real registrations: `tests/store_suite.rs`.)

    use std::time::Duration;

    use super::*;

    /// Long enough for a loaded CI machine; a hang would exceed it by far.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn start(queue: usize) -> Writer {
        Writer::start(Connection::open_in_memory, queue, Some(7), None).expect("writer starts")
    }

    fn rows(ctx: &WriterCtx) -> Result<i64, StoreError> {
        ctx.conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .map_err(|err| sqlite_err(err).into())
    }

    fn insert(ctx: &WriterCtx, x: i64) -> Result<(), StoreError> {
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
        let (release, release_rx) = std_mpsc::channel::<()>();
        let held = tokio::spawn({
            let handle = handle.clone();
            async move {
                handle
                    .run(move |_| {
                        let _ = inside_tx.send(());
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

    #[tokio::test]
    async fn a_panicking_job_is_rolled_back_alone_and_the_writer_goes_on() {
        let writer = start(16);
        let handle = writer.handle.clone();
        answer(handle.run(|ctx| {
            ctx.conn
                .execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")
                .map_err(|err| sqlite_err(err).into())
        }))
        .await
        .expect("table created");

        // Queued behind a holding job, the three run as one group: the panic is between
        // two good jobs of the same transaction.
        let (held, release) = hold(&handle).await;
        let jobs = [1, 2, 3].map(|x| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .run(move |ctx| {
                        insert(ctx, x)?;
                        assert!(x != 2, "a bug in job {x}");
                        Ok(x)
                    })
                    .await
            })
        });
        queued(&handle, 3).await;
        release.send(()).expect("the holding job waits");
        answer(held).await.expect("joined").expect("held");
        let mut answers = Vec::new();
        for job in jobs {
            answers.push(answer(job).await.expect("joined"));
        }
        assert!(matches!(answers[0], Ok(1)), "{:?}", answers[0]);
        assert!(
            matches!(answers[1], Err(StoreError::Internal(_))),
            "the panicking job fails as an internal error, got {:?}",
            answers[1]
        );
        assert!(matches!(answers[2], Ok(3)), "{:?}", answers[2]);

        // Its insert was undone; the others' were committed, and the writer still works.
        assert_eq!(answer(handle.run(|ctx| rows(ctx))).await.expect("count"), 2);
        assert!(handle.is_running());
        answer(writer.stop()).await;
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
