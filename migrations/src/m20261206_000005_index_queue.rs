//! The waiting queue in id order per source, as an index of its own.
//!
//! A drain serves each source's oldest waiting contact (open, no operator) and then looks
//! for the next; a registration asks whether its source has any waiting. This partial
//! index holds only the waiting contacts, by `(source_id, id)`, so each of those is one
//! probe, whatever the size of the contacts table or of the queue. On PostgreSQL the
//! older `ix_contacts_unassigned_source` keeps equal keys in heap order, not id order, so
//! the oldest needed a sort of the whole source's queue. SQLite and PostgreSQL accept the
//! same statement.

use sea_orm_migration::prelude::*;

/// Creates `ix_contacts_queue`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_contacts_queue ON contacts (source_id, id) \
                 WHERE operator_id IS NULL AND status = 'open'",
            )
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ix_contacts_queue")
            .await
            .map(drop)
    }
}
