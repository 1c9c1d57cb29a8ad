//! What the server runs beside the requests: key expiry, the drain owed to a refilling
//! pace bucket, shutdown; and the helpers the ports' implementation shares.

use crm_core::{Contact, StoreError};
use sea_orm::DatabaseConnection;

use crate::DbStore;

impl DbStore {
    /// Forgets idempotency keys older than [`IdempotencyKey::LIFETIME`]; returns how many.
    /// Expired keys are ignored (and taken over) anyway; this only keeps the table small,
    /// so run it now and then (the server does, hourly).
    ///
    /// # Errors
    /// Driver failures.
    pub async fn expire_idempotency_keys(&self) -> Result<usize, StoreError> {
        either!(self, |db| db
            .write(async |conn| crate::keys::expire_keys(conn).await)
            .await)
    }

    /// Resolves when a drain is owed because an operator's pace bucket refills (a drain or
    /// registration left contacts waiting while someone was rate-limited); pending while
    /// none is. The server then runs [`Store::drain_queue`], which owes the next one if
    /// someone is still rate-limited, so the queue is served as soon as a bucket allows.
    pub async fn paced_drain_due(&self) {
        either!(self, |db| db.drain_log.timer.due(&db.clock).await);
    }

    /// When a drain is owed to a refilling pace bucket ([`DbStore::paced_drain_due`]), if one
    /// is.
    #[must_use]
    pub fn next_paced_drain(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        either!(self, |db| db.drain_log.timer.next())
    }

    /// Stops taking writes, commits what is queued and answers it, then returns.
    pub async fn shutdown(&self) {
        either!(self, |db| db.shutdown().await);
    }

    /// After a registration stored `contact` waiting, on PostgreSQL: a drain of its source,
    /// for capacity another replica freed since that replica's own drain. (The SQLite
    /// writer is alone, and every job that frees capacity drains: nobody could take it.)
    pub(crate) async fn drain_after(&self, contact: &Contact) {
        if let (Self::Postgres(db), None) = (self, &contact.operator) {
            db.drain_source(contact.source_id).await;
        }
    }

    /// The read pool (on PostgreSQL also the write pool).
    pub(crate) fn reader(&self) -> &DatabaseConnection {
        either!(self, |db| &db.reader)
    }

    /// The newest committed events in memory (SQLite's writer keeps them; PostgreSQL's
    /// replicas read the table).
    pub(crate) fn tail(&self) -> Option<&crate::sqlite::outbox::Tail> {
        match self {
            Self::Sqlite(db) => Some(db.handle.tail()),
            Self::Postgres(_) => None,
        }
    }
}
