//! The unassigned backlog as an index of its own, so that a metrics scrape counts it
//! without reading the contacts table.
//!
//! `crm_unassigned_backlog` counts the open contacts without an operator per source on
//! every scrape. With only `ix_contacts_operator_status` that count looked each entry up
//! in the table to read its `source_id`, then sorted them. This partial index holds
//! exactly the backlog (`operator_id IS NULL AND status = 'open'`), in `source_id` order
//! and with it in every entry, so the count reads the index alone, already grouped. The
//! two constant columns lead so that SQLite's planner sees the same equality search as
//! on `ix_contacts_operator_status` and prefers this one (it covers and needs no sort);
//! with `source_id` alone it chose the other index on a database without statistics.
//! Assigned and closed contacts are not in it, so most writes never touch it. SQLite and
//! PostgreSQL both have partial indexes and accept the same statement.

use sea_orm_migration::prelude::*;

/// Creates `ix_contacts_unassigned_source`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_contacts_unassigned_source ON contacts \
                 (operator_id, status, source_id) \
                 WHERE operator_id IS NULL AND status = 'open'",
            )
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ix_contacts_unassigned_source")
            .await
            .map(drop)
    }
}
