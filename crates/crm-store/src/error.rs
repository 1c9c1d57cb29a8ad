//! Driver errors mapped onto the ports' [`StoreError`]. Constraint violations that mean
//! something to a client are classified where they can happen; everything else is
//! `Unavailable` (the connection is gone) or `Internal`.

use crm_core::StoreError;

/// Maps an error of the async driver.
pub fn db_err(err: sea_orm::DbErr) -> StoreError {
    use sea_orm::DbErr;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => StoreError::Unavailable(Box::new(err)),
        other => StoreError::Internal(Box::new(other)),
    }
}

/// Maps an error of the synchronous (writer) driver.
pub fn sync_err(err: sea_orm_sync::DbErr) -> StoreError {
    use sea_orm_sync::DbErr;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => StoreError::Unavailable(Box::new(err)),
        other => StoreError::Internal(Box::new(other)),
    }
}
