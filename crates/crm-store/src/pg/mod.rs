//! The PostgreSQL backend: one async SeaORM pool for reads and writes, each write in its
//! own transaction, but for a registration without an idempotency key, whose only write
//! is one statement (see [`registration`]). Several API processes may share the database: the capacity claim is
//! a conditional update (see `sql::CLAIM_OPERATOR`), so no process needs to know of the
//! others.

pub mod registration;

use std::time::Duration;

use crm_core::StoreError;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait,
};

use crate::{ConnectError, StoreConfig, error::db_err};

/// Any number: the key of the advisory lock that serialises migrations of replicas
/// starting together.
pub const MIGRATION_LOCK: i64 = 0x0063_726d_5f6d_6967;

/// Connects the pool and runs pending migrations under an advisory lock.
pub async fn open(config: &StoreConfig) -> Result<DatabaseConnection, ConnectError> {
    let mut options = ConnectOptions::new(config.database_url.clone());
    options
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_timeout(config.acquire_timeout)
        // sqlx pings every connection it hands out by default: one more round trip per
        // registration. Only connections idle for a second are pinged now, which under
        // load is none of them. A broken connection is noticed by its next statement
        // (a 503); from then on, for a while, every connection is pinged before use, so
        // that after a server restart one request fails, not one per pooled connection.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .map_sqlx_postgres_before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_IF_IDLE_FOR && crate::error::lost_recently() {
                    sea_orm::sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .sqlx_logging(false);
    if let Some(timeout) = config.statement_timeout {
        options.statement_timeout(timeout);
    }
    let db = sea_orm::Database::connect(options)
        .await
        .map_err(|err| ConnectError::Database(Box::new(err)))?;
    migrate(&db)
        .await
        .map_err(|err| ConnectError::Migration(Box::new(err)))?;
    Ok(db)
}

async fn migrate(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Begins a write transaction.
pub async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    db.begin().await.map_err(db_err)
}

/// Commits on success, rolls back on error.
pub async fn finish<T>(
    txn: DatabaseTransaction,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            txn.commit().await.map_err(db_err)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = txn.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

/// How long a pooled connection may sit idle before it is pinged on checkout.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Default bound on waiting for a pooled connection.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
