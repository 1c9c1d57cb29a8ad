//! Running migrations on their own, for deploy pipelines (`crm-api migrate …`). The
//! server also applies pending migrations when it starts.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait};

use crate::{ConnectError, DatabaseUrl, StoreConfig};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the last `n` applied migrations.
    Down(u32),
    /// Report which migrations are applied.
    Status,
    /// Drop every table and apply all migrations from scratch (destroys data).
    Fresh,
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// Its name.
    pub name: String,
    /// Applied to this database.
    pub applied: bool,
}

/// Runs `action` against the database of `config` and returns the state afterwards.
/// On SQLite it takes the same lock as the server (an `flock` on the database file), so
/// it refuses to run while a server uses the file.
///
/// # Errors
/// [`ConnectError`] when the database cannot be reached, locked or migrated.
pub async fn migrate(
    config: &StoreConfig,
    action: MigrateAction,
) -> Result<Vec<MigrationState>, ConnectError> {
    let (url, _lock) = match &config.database_url {
        DatabaseUrl::Sqlite(sqlite) => {
            (sqlite.with_mode("rwc"), Some(crate::sqlite::lock(sqlite)?))
        }
        DatabaseUrl::Postgres(pg) => (pg.as_secret_str().to_owned(), None),
    };
    let db = sea_orm::Database::connect(
        ConnectOptions::new(url)
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .map_err(|err| ConnectError::Database(Box::new(err)))?;
    let failed = |err: sea_orm::DbErr| ConnectError::Migration(Box::new(err));
    if let DatabaseUrl::Postgres(_) = config.database_url {
        db.execute_unprepared(&format!(
            "SELECT pg_advisory_lock({})",
            crate::pg::MIGRATION_LOCK
        ))
        .await
        .map_err(failed)?;
    }
    match action {
        MigrateAction::Up => Migrator::up(&db, None).await.map_err(failed)?,
        MigrateAction::Down(n) => Migrator::down(&db, Some(n)).await.map_err(failed)?,
        MigrateAction::Fresh => Migrator::fresh(&db).await.map_err(failed)?,
        MigrateAction::Status => {}
    }
    let states = Migrator::get_migration_with_status(&db)
        .await
        .map_err(failed)?
        .iter()
        .map(|m| MigrationState {
            name: m.name().to_owned(),
            applied: matches!(m.status(), migration::MigrationStatus::Applied),
        })
        .collect();
    let _ = db.close().await;
    Ok(states)
}
