//! The waiting queue in id order per source, as an index of its own.
//!
//! A drain serves each source's oldest waiting contact (open, no operator) and then looks
//! for the next; a registration asks whether its source has any waiting. This partial
//! index holds only the waiting contacts, in `(source_id, id)` order, so each of those is
//! one probe, whatever the size of the contacts table or of the queue. The two constant
//! columns lead, as in `ix_contacts_unassigned_source`, so that SQLite's planner sees the
//! equality search it would otherwise do on `ix_contacts_operator_status` and prefers this
//! one. On PostgreSQL the
//! older `ix_contacts_unassigned_source` keeps equal keys in heap order, not id order, so
//! the oldest needed a sort of the whole source's queue. It serves the metrics' count per
//! source as well, so it replaces `ix_contacts_unassigned_source` (migration
//! `m20261205_000004`), which every waiting contact's insert and drain would otherwise
//! keep up to date too. SQLite and PostgreSQL accept the same statements.

use sea_orm_migration::prelude::*;

/// Creates `ix_contacts_queue` in place of `ix_contacts_unassigned_source`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX ix_contacts_queue ON contacts (operator_id, status, source_id, id) \
             WHERE operator_id IS NULL AND status = 'open'",
        )
        .await?;
        db.execute_unprepared("DROP INDEX ix_contacts_unassigned_source")
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX ix_contacts_unassigned_source ON contacts \
             (operator_id, status, source_id) \
             WHERE operator_id IS NULL AND status = 'open'",
        )
        .await?;
        db.execute_unprepared("DROP INDEX ix_contacts_queue")
            .await
            .map(drop)
    }
}
