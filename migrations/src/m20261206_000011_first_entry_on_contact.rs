//! A contact's first decision (its registration: `registered` or `queued`) moves onto the
//! contact's own row; `contact_decisions` keeps the entries after it (drained, by hand,
//! unassigned), from `seq` 2.
//!
//! Every registration wrote a history row of its own: a second table and its `at` index
//! beside the contact, about a tenth of the SQLite server's time per registration on the
//! default benchmark (docs/benchmarks.md, "2026-12-06 evening"). The first entry's facts are
//! all the contact's: its time is `created_at`, its source the contact's, its record goes in
//! `contacts.decision` (where the original kept it), and the operator the registration
//! chose in `registered_operator_id` (`NULL` when it queued), which also says the path. Later
//! entries, rarer, stay in `contact_decisions` with their own time and operator.
//!
//! `up` moves each contact's `seq` 1 entry onto its row and deletes it from the history;
//! `down` writes them back from the rows. SQLite and PostgreSQL accept the same statements.

use sea_orm_migration::prelude::*;

/// Adds `contacts.registered_operator_id` and moves the first entries.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE contacts ADD COLUMN registered_operator_id BIGINT")
            .await?;
        db.execute_unprepared(
            "UPDATE contacts SET \
             decision = (SELECT d.record FROM contact_decisions d WHERE d.id = contacts.id * 65536 + 1), \
             registered_operator_id = (SELECT d.operator_id FROM contact_decisions d \
             WHERE d.id = contacts.id * 65536 + 1 AND d.path = 'registered') \
             WHERE EXISTS (SELECT 1 FROM contact_decisions d WHERE d.id = contacts.id * 65536 + 1)",
        )
        .await?;
        db.execute_unprepared("DELETE FROM contact_decisions WHERE seq = 1")
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO contact_decisions (id, contact_id, seq, path, source_id, operator_id, record, at) \
             SELECT id * 65536 + 1, id, 1, \
             CASE WHEN registered_operator_id IS NULL THEN 'queued' ELSE 'registered' END, \
             source_id, registered_operator_id, decision, created_at FROM contacts ORDER BY id",
        )
        .await?;
        db.execute_unprepared("ALTER TABLE contacts DROP COLUMN registered_operator_id")
            .await
            .map(drop)
    }
}
