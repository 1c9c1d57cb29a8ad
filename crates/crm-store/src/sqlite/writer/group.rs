//! One group of jobs in one transaction: the first run without savepoints, the run again
//! with a savepoint per job when a job failed after writing, and the smooth credits the
//! source cache holds unwritten (see the writer's module docs and `SourceCache`).

use std::sync::atomic::{AtomicU64, Ordering};

use crm_core::{StoreError, error_chain};
use rusqlite::Connection;

use super::{Job, WriterCtx};
use crate::conn::sqlite_err;

/// Runs `group` in one transaction and commits it (see the module docs). On an error the
/// transaction is rolled back; jobs that had not run are then answered with it. A second
/// run is counted in `reruns`.
pub(super) fn run(
    ctx: &mut WriterCtx<'_>,
    group: &mut [Box<dyn Job>],
    reruns: &AtomicU64,
) -> Result<(), StoreError> {
    if !ctx.conn.is_autocommit() {
        // A transaction left open by a failure before: never build on it.
        tracing::error!("the sqlite writer found a transaction open; rolling it back");
        ctx.cache.clear();
        exec(ctx.conn, "ROLLBACK")?;
    }
    exec(ctx.conn, "BEGIN IMMEDIATE")?;
    // So that a group run again draws as it first did, whatever was drawn in between.
    let rng = ctx.rng.clone();
    let mut undo = None;
    for (i, job) in group.iter_mut().enumerate() {
        if !job.uses_cache() {
            // It reads or writes rows the cache may be ahead of.
            flush(ctx)?;
        }
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
            // Rows are all a job writes (SQLite does not count schema changes).
            if ctx.conn.total_changes() != changes || ended {
                ctx.cache.clear();
                undo = Some(i);
                break;
            }
            // It wrote nothing, so it left no credit in the cache either (a registration
            // moves credits only after it stored its contact): what the cache holds
            // unwritten is the earlier jobs', which stand. What it cached may be wrong.
            flush(ctx)?;
            ctx.cache.clear();
        }
    }
    if let Some(failed) = undo {
        reruns.fetch_add(1, Ordering::Relaxed);
        if !ctx.conn.is_autocommit() {
            exec(ctx.conn, "ROLLBACK")?;
        }
        ctx.rng = rng;
        ctx.pending.take();
        exec(ctx.conn, "BEGIN IMMEDIATE")?;
        for (i, job) in group.iter_mut().enumerate() {
            if i != failed {
                run_in_savepoint(ctx, job.as_mut()).map_err(|err| rollback(ctx, err))?;
            }
        }
    }
    flush(ctx)?;
    exec(ctx.conn, "COMMIT").map_err(|err| rollback(ctx, err))
}

/// Writes the smooth credits the cache holds unwritten; on an error, rolls the group back.
fn flush(ctx: &mut WriterCtx<'_>) -> Result<(), StoreError> {
    ctx.cache.flush(ctx.conn).map_err(|err| rollback(ctx, err))
}

/// Runs `job` inside its own savepoint, which is rolled back if the job fails.
fn run_in_savepoint(ctx: &mut WriterCtx<'_>, job: &mut dyn Job) -> Result<(), StoreError> {
    exec(ctx.conn, "SAVEPOINT job")?;
    let noted = ctx.pending.len();
    if job.run(ctx) {
        // Inside the savepoint, so that a later job's failure cannot take them.
        ctx.cache.flush(ctx.conn)?;
        exec(ctx.conn, "RELEASE job")
    } else {
        ctx.cache.clear();
        ctx.pending.truncate(noted);
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
