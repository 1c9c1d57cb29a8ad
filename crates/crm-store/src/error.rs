//! Driver errors mapped onto the ports' [`StoreError`]. Constraint violations that mean
//! something to a client are classified where they can happen; everything else is
//! `Unavailable` (the connection is gone) or `Internal`.

use std::{error::Error, fmt::Write as _};

use crm_core::StoreError;

/// An error followed by its sources (`store is unavailable: database or disk is full`),
/// for logs and for causes built from another error.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

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
