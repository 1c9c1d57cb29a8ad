//! Driver errors mapped onto the ports' [`StoreError`]. Constraint violations that mean
//! something to a client are classified where they can happen; everything else is
//! `Unavailable` (the connection is gone, or the same request may succeed if retried) or
//! `Internal`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crm_core::StoreError;

/// Data the database gave back that the service never writes (a row missing that a write
/// just returned, a value out of its range): the database was changed behind its back.
pub(crate) fn broken(what: &'static str) -> StoreError {
    StoreError::Internal(what.into())
}

/// Maps an error of the async driver.
pub fn db_err(err: sea_orm::DbErr) -> StoreError {
    use sea_orm::{DbErr, RuntimeErr};
    match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => StoreError::Unavailable(Box::new(err)),
        DbErr::Query(RuntimeErr::SqlxError(cause)) | DbErr::Exec(RuntimeErr::SqlxError(cause))
            if retryable(cause) =>
        {
            if lost(cause) {
                note_lost();
            }
            StoreError::Unavailable(Box::new(err))
        }
        _ => StoreError::Internal(Box::new(err)),
    }
}

/// Whether a client may retry: the connection broke under the statement ([`lost`]), no
/// connection was to be had, the server gave up on the statement to break a deadlock or a
/// serialisation conflict (40P01, 40001), or cancelled it at its `statement_timeout`
/// (57014: a report over a long window on a busy database). Nothing of the statement was written, and the
/// same request may succeed when retried, which is what a 503 tells the client. (Every
/// write locks its rows in one order, docs/architecture.md, so a deadlock needs writers
/// that do not: e.g. replicas of an older version during a rolling upgrade.)
fn retryable(err: &sea_orm::SqlxError) -> bool {
    use sea_orm::SqlxError;
    lost(err)
        || matches!(err, SqlxError::PoolTimedOut | SqlxError::PoolClosed)
        || matches!(err, SqlxError::Database(db)
            if db.code().is_some_and(|code| matches!(&*code, "40P01" | "40001" | "57014")))
}

/// The connection broke under a statement: the socket failed, or the server ended the
/// session (SQLSTATE class 08, or 57P01..57P03: shutdown, crash, not accepting yet).
pub(crate) fn lost(err: &sea_orm::SqlxError) -> bool {
    use sea_orm::SqlxError;
    match err {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::Protocol(_)
        | SqlxError::WorkerCrashed => true,
        SqlxError::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// When a statement last found its connection broken, in milliseconds since the epoch (0:
/// never). One per process: a process has one PostgreSQL pool (tests with several only
/// check a few more connections than they must).
static LAST_LOST: AtomicU64 = AtomicU64::new(0);

/// How long after a broken connection every pooled connection is checked before use.
pub const CHECK_AFTER_LOSS: Duration = Duration::from_secs(10);

fn millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Notes that a statement found its connection broken, which [`lost_recently`] reports.
pub(crate) fn note_lost() {
    LAST_LOST.store(millis_now(), Ordering::Relaxed);
}

/// Whether a connection broke in the last [`CHECK_AFTER_LOSS`]: then the pool's other
/// connections are likely broken too (the server restarted, or a proxy dropped them all),
/// and each should be checked before use instead of failing its next request.
pub fn lost_recently() -> bool {
    let last = LAST_LOST.load(Ordering::Relaxed);
    last != 0
        && millis_now().saturating_sub(last)
            < u64::try_from(CHECK_AFTER_LOSS.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(all(test, feature = "postgres-tests"))]
mod tests {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    use super::*;
    use crate::testing::{Backend, TestDatabase};

    /// Two transactions that lock two rows in opposite orders: PostgreSQL fails one of
    /// them to break the deadlock, and that is a 503 the client may retry, not a 500.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_deadlock_is_retryable() {
        let db = TestDatabase::create(Backend::Postgres).await;
        let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
        conn.execute_unprepared(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)",
        )
        .await
        .expect("table");
        let lock = |id: i32| format!("UPDATE t SET id = id WHERE id = {id}");
        let (a, b) = (
            conn.begin().await.expect("a"),
            conn.begin().await.expect("b"),
        );
        a.execute_unprepared(&lock(1)).await.expect("a locks 1");
        b.execute_unprepared(&lock(2)).await.expect("b locks 2");
        // Each now waits for the other; the victim rolls back so the other can finish.
        let cross = |txn: sea_orm::DatabaseTransaction, id: i32| {
            tokio::spawn(async move {
                let result = txn.execute_unprepared(&lock(id)).await;
                let end = match result {
                    Ok(_) => txn.commit().await,
                    Err(_) => txn.rollback().await,
                };
                end.expect("end the transaction");
                result.err()
            })
        };
        let (a, b) = (cross(a, 2), cross(b, 1));
        let errors: Vec<_> = [a.await.expect("a"), b.await.expect("b")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(errors.len(), 1, "one victim: {errors:?}");
        let err = db_err(errors.into_iter().next().expect("the victim"));
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        conn.close().await.expect("close");
        db.drop_database().await;
    }
}
