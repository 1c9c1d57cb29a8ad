//! The decision history in time order on PostgreSQL, for reports over a window: a source's
//! realised against expected shares (`GET /api/sources/{id}/distribution`) and each
//! operator's assignments in the last hour and day (`GET /api/stats/operators`).
//!
//! One index on `at` alone, not the `(source_id, at)` and `(operator_id, at)` pair: the
//! reports read the window's entries of every source and keep their own, which costs in
//! proportion to the window (at 1,000,000 decisions: docs/benchmarks.md).
//!
//! Not on SQLite: there the one writer commits entries in time order and the table's
//! rowid follows commit order, so a window is a range of rowids (crm-store's `insight`
//! module), and every registration's commit is spared an index page. With this index the
//! default benchmark ran at 0.965× its speed without (five interleaved pairs,
//! docs/benchmarks.md, 2026-12-06).

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

/// Creates `ix_contact_decisions_at` on PostgreSQL.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX ix_contact_decisions_at ON contact_decisions (at)")
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ix_contact_decisions_at")
            .await
            .map(drop)
    }
}
