//! The decision history in time order, for reports over a window: a source's realised
//! against expected shares (`GET /api/sources/{id}/distribution`) and each operator's
//! assignments in the last hour and day (`GET /api/stats/operators`).
//!
//! One index on `at` alone, not the `(source_id, at)` and `(operator_id, at)` pair: every
//! registration writes a history entry, and on SQLite each index of this table costs each
//! commit a page per distinct key prefix it touches. Times only grow, so every entry lands
//! at the right edge of this one index, whatever the number of sources and operators. It
//! still costs: five interleaved pairs of the default benchmark ran at 0.965× the speed
//! without it (docs/benchmarks.md, 2026-12-06). The history has no column in commit order
//! to find a window by instead (its key is the contact's, and a contact's later entries,
//! a drain or a hand's choice, come long after its first). The reports read the window's
//! entries of every source and keep their own, which costs in proportion to the window
//! (at 1,000,000 decisions: docs/benchmarks.md).

use sea_orm_migration::prelude::*;

/// Creates `ix_contact_decisions_at`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX ix_contact_decisions_at ON contact_decisions (at)")
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ix_contact_decisions_at")
            .await
            .map(drop)
    }
}
