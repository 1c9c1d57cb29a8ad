//! Each contact's decision history, one table, the one home of decisions: one row each
//! time a contact is registered, queued, drained, assigned by hand or unassigned, written
//! in the same unit of work as the change it explains.
//!
//! `record` is the rule's record (`crm_core::Decision::record`) for automatic paths.
//! `source_id` is the contact's, kept on the row for reports by source.
//!
//! The key is `(contact_id, seq)` packed into the one integer `id = contact_id × 65536 +
//! seq` (at most 65,535 entries per contact): one contact's history is a range of the
//! primary key, so the table needs no index of its own. Every registration writes an
//! entry, and on SQLite each index of this table costs each commit a page per distinct key
//! it touches: with `(source_id, at)` and `(operator_id, at)` the default benchmark ran at
//! 0.77× the pinned baseline against 0.89× without them (docs/benchmarks.md, 2026-12-06).
//! Indexes for reports over a time window (per source, per operator) come with the reports
//! that read them, measured then.
//!
//! Contacts stored before: each gets a first entry from its stored `decision` (`registered`
//! when the record chose an operator, otherwise `queued`), at its `created_at`, and a
//! `manual` entry (no record, at the same time: when it happened was not kept) where its
//! operator now differs from the one chosen. `contacts.decision` stays, unread from now on
//! and no longer written, so that `down` leaves the schema as it was.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

/// Creates `contact_decisions` and fills it from `contacts.decision`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ContactDecisions::Table)
                    .col(big_integer(ContactDecisions::Id).primary_key())
                    .col(big_integer(ContactDecisions::ContactId))
                    .col(integer(ContactDecisions::Seq))
                    .col(string_len(ContactDecisions::Path, 16))
                    .col(big_integer(ContactDecisions::SourceId))
                    .col(big_integer_null(ContactDecisions::OperatorId))
                    .col(text_null(ContactDecisions::Record))
                    .col(timestamp_with_time_zone(ContactDecisions::At))
                    .check(path_is_one_of(&[
                        "registered",
                        "queued",
                        "drained",
                        "manual",
                        "unassigned",
                    ]))
                    .to_owned(),
            )
            .await?;
        let chosen = match manager.get_database_backend() {
            DbBackend::Postgres => "(decision::json->>'chosen')::bigint",
            _ => "json_extract(decision, '$.chosen')",
        };
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "INSERT INTO contact_decisions (id, contact_id, seq, path, source_id, operator_id, record, at) \
             SELECT id * 65536 + 1, id, 1, CASE WHEN {chosen} IS NULL THEN 'queued' ELSE 'registered' END, \
             source_id, {chosen}, decision, created_at FROM contacts ORDER BY id"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "INSERT INTO contact_decisions (id, contact_id, seq, path, source_id, operator_id, record, at) \
             SELECT id * 65536 + 2, id, 2, 'manual', source_id, operator_id, NULL, created_at FROM contacts \
             WHERE operator_id IS NOT NULL AND ({chosen} IS NULL OR {chosen} <> operator_id) \
             ORDER BY id"
        ))
        .await
        .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ContactDecisions::Table).to_owned())
            .await
    }
}

/// `path = 'a' OR path = 'b' OR …`, not `path IN (…)`: SQLite evaluates a CHECK's `IN` list
/// of more than two values by building a temporary b-tree of it for every row written,
/// which cost each registration ~7 µs of the writer's time (about 8 % of the default
/// benchmark's throughput, docs/benchmarks.md); the `OR` chain costs nothing measurable.
fn path_is_one_of(paths: &[&'static str]) -> SimpleExpr {
    paths
        .iter()
        .map(|path| Expr::col(ContactDecisions::Path).eq(*path))
        .reduce(SimpleExpr::or)
        .expect("at least one path")
}

#[derive(DeriveIden)]
enum ContactDecisions {
    Table,
    Id,
    ContactId,
    Seq,
    Path,
    SourceId,
    OperatorId,
    Record,
    At,
}
