//! Fair pacing: an operator's optional `max_assignments_per_minute` and its bucket.
//!
//! The bucket is one instant, `pace_tat_us` (microseconds since the Unix epoch; 0 for an
//! operator never paced), the theoretical arrival time of `crm_core::Pace`: the claim that
//! raises an operator's counter for an automatic assignment moves it in the same statement.
//! `NULL` in `max_assignments_per_minute` means no limit, as before this migration, so
//! existing operators keep their behaviour. SQLite and PostgreSQL accept the same statements.

use sea_orm_migration::prelude::*;

/// Adds the two columns to `operators`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE operators ADD COLUMN max_assignments_per_minute BIGINT NULL \
             CHECK (max_assignments_per_minute BETWEEN 1 AND 60000)",
        )
        .await?;
        db.execute_unprepared(
            "ALTER TABLE operators ADD COLUMN pace_tat_us BIGINT NOT NULL DEFAULT 0",
        )
        .await
        .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE operators DROP COLUMN pace_tat_us")
            .await?;
        db.execute_unprepared("ALTER TABLE operators DROP COLUMN max_assignments_per_minute")
            .await
            .map(drop)
    }
}
