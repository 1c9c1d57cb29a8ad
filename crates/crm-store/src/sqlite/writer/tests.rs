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

/// Inserts the row `x`, noting an event numbered `x` as the outbox's writes do.
pub(super) fn insert(ctx: &WriterCtx<'_>, x: i64) -> Result<(), StoreError> {
    ctx.conn
        .execute("INSERT INTO t (x) VALUES (?1)", [x])
        .map_err(|err| StoreError::from(sqlite_err(err)))?;
    note_event(ctx, x);
    Ok(())
}

/// Notes an event numbered `seq`, as the outbox's writes do.
fn note_event(ctx: &WriterCtx<'_>, seq: i64) {
    let kind = crm_core::EventType::OperatorDeleted;
    let event =
        super::super::outbox::Written::new(seq, kind, chrono::Utc::now(), None, "{}".into());
    ctx.pending.push(event);
}

pub(super) async fn answer<T>(pending: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("the writer answers without hanging")
}

/// Occupies the writer with a job that waits until the returned sender sends (or is
/// dropped); returns once that job runs, so the queue is empty behind it.
pub(super) async fn hold(
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

/// Lets the holding job of [`hold`] finish, so the jobs queued behind it run as one group;
/// their answers, in order.
pub(super) async fn release_and_answer<T>(
    release: std_mpsc::Sender<()>,
    held: tokio::task::JoinHandle<Result<i64, StoreError>>,
    jobs: Vec<tokio::task::JoinHandle<Result<T, StoreError>>>,
) -> Vec<Result<T, StoreError>> {
    release.send(()).expect("the holding job waits");
    answer(held).await.expect("joined").expect("held");
    let mut answers = Vec::new();
    for job in jobs {
        answers.push(answer(job).await.expect("joined"));
    }
    answers
}

/// Waits until `n` jobs wait in the queue.
pub(super) async fn queued(handle: &WriterHandle, n: u64) {
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
    handle.tail().start(0, 0);

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
    let answers = release_and_answer(release, held, jobs).await;
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
    let published: Vec<i64> = handle
        .tail()
        .between(0, u64::MAX, 100)
        .expect("the tail started")
        .events
        .iter()
        .map(|e| i64::try_from(e.seq).expect("small"))
        .collect();
    assert_eq!(
        published, stored,
        "the tail holds the events of the jobs committed, no other"
    );
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

/// A group whose commit fails leaves nothing in the tail, which stops (an I/O error can
/// leave a commit's outcome unknown); the next commit starts it again from the table.
#[tokio::test]
async fn a_failed_commit_stops_the_tail_until_a_commit_succeeds() {
    let connect = || {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
        Ok(conn)
    };
    let writer = Writer::start(connect, 8, Some(7), None).expect("writer starts");
    let handle = writer.handle.clone();
    answer(handle.run(|ctx| {
        ctx.conn
            .execute_batch(
                "CREATE TABLE events (seq integer PRIMARY KEY); \
                 CREATE TABLE event_log (id integer PRIMARY KEY, pruned_through integer); \
                 INSERT INTO event_log VALUES (1, 0); \
                 CREATE TABLE parent (id integer PRIMARY KEY); \
                 CREATE TABLE child (p integer REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
            )
            .map_err(|err| sqlite_err(err).into())
    }))
    .await
    .expect("tables");
    let tail = handle.tail();
    tail.start(0, 0);
    let event = |ctx: &WriterCtx<'_>, seq: i64| -> Result<(), StoreError> {
        ctx.conn
            .execute("INSERT INTO events (seq) VALUES (?1)", [seq])
            .map_err(|err| StoreError::from(sqlite_err(err)))?;
        note_event(ctx, seq);
        Ok(())
    };
    answer(handle.run(move |ctx| event(ctx, 1)))
        .await
        .expect("first");
    assert_eq!(tail.newest(), Some(1));
    // The job succeeds; its group's commit fails on the deferred foreign key.
    let failed = answer(handle.run(move |ctx| {
        event(ctx, 2)?;
        ctx.conn
            .execute("INSERT INTO child (p) VALUES (99)", [])
            .map(drop)
            .map_err(|err| sqlite_err(err).into())
    }))
    .await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    assert_eq!(tail.newest(), None, "stopped");
    assert!(tail.between(0, u64::MAX, 10).is_none());
    answer(handle.run(move |ctx| event(ctx, 2)))
        .await
        .expect("again");
    assert_eq!(tail.newest(), Some(2), "started from the table");
    assert!(
        tail.between(1, u64::MAX, 10).is_none(),
        "older positions read the table"
    );
    answer(handle.run(move |ctx| event(ctx, 3)))
        .await
        .expect("next");
    let page = tail.between(2, u64::MAX, 10).expect("in the tail");
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    answer(writer.stop()).await;
}

/// A failed commit's answer names SQLite's own reason, not only "unavailable": the
/// API logs the cause of a 503, and "store is unavailable" alone helps nobody.
#[test]
fn a_failed_commit_answers_with_its_cause() {
    let (reply, mut answer) = oneshot::channel::<Result<(), StoreError>>();
    let job = Box::new(Call {
        write: |_: &mut WriterCtx<'_>| Ok(()),
        uses_cache: false,
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
