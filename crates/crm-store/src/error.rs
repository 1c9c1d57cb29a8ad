//! Driver errors mapped onto the ports' [`StoreError`]. Constraint violations that mean
//! something to a client are classified where they can happen; everything else is
//! `Unavailable` (the connection is gone) or `Internal`.

use crm_core::StoreError;

/// Maps an error of the async driver.
pub fn db_err(err: sea_orm::DbErr) -> StoreError {
    use sea_orm::{DbErr, RuntimeErr};
    match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => StoreError::Unavailable(Box::new(err)),
        DbErr::Query(RuntimeErr::SqlxError(cause)) | DbErr::Exec(RuntimeErr::SqlxError(cause))
            if connection_lost(cause) =>
        {
            StoreError::Unavailable(Box::new(err))
        }
        _ => StoreError::Internal(Box::new(err)),
    }
}

/// The connection broke under a statement: the socket failed, or the server ended the
/// session (SQLSTATE class 08, or 57P01..57P03: shutdown, crash, not accepting yet).
fn connection_lost(err: &sea_orm::SqlxError) -> bool {
    use sea_orm::SqlxError;
    match err {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::Protocol(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed => true,
        SqlxError::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}
