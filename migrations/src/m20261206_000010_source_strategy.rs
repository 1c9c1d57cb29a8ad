//! Per-source strategies (the Strategies issue): a source's `strategy` (`weighted_random`,
//! as every source before this migration, or `smooth_weighted`) and `sticky_owner`, and the
//! smooth rule's state, one `credit` per weight row (../shared/DECISIONS.md: the state lives
//! on the weight row, changed in the same unit of work as the assignment it leads to).
//! Existing sources keep their behaviour; SQLite and PostgreSQL accept the same statements.

use sea_orm_migration::prelude::*;

/// Adds the three columns.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE sources ADD COLUMN strategy VARCHAR(32) NOT NULL \
             DEFAULT 'weighted_random' \
             CHECK (strategy IN ('weighted_random', 'smooth_weighted'))",
        )
        .await?;
        db.execute_unprepared(
            "ALTER TABLE sources ADD COLUMN sticky_owner BOOLEAN NOT NULL DEFAULT FALSE",
        )
        .await?;
        db.execute_unprepared(
            "ALTER TABLE operator_source_weights ADD COLUMN credit BIGINT NOT NULL DEFAULT 0",
        )
        .await
        .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE operator_source_weights DROP COLUMN credit")
            .await?;
        db.execute_unprepared("ALTER TABLE sources DROP COLUMN sticky_owner")
            .await?;
        db.execute_unprepared("ALTER TABLE sources DROP COLUMN strategy")
            .await
            .map(drop)
    }
}
