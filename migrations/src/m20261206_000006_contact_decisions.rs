//! Each contact's decision history, one table, the one home of decisions: one row each
//! time a contact is registered, queued, drained, assigned by hand or unassigned, written
//! in the same unit of work as the change it explains.
//!
//! `record` is the rule's record (`crm_core::Decision::record`) for automatic paths.
//! `source_id` is the contact's, kept on the row so that the decisions of one source over a
//! time window (the fairness report) are an index range, as are one operator's.
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
                    .col(big_pk_auto(ContactDecisions::Id))
                    .col(big_integer(ContactDecisions::ContactId))
                    .col(integer(ContactDecisions::Seq))
                    .col(string_len(ContactDecisions::Path, 16))
                    .col(big_integer(ContactDecisions::SourceId))
                    .col(big_integer_null(ContactDecisions::OperatorId))
                    .col(text_null(ContactDecisions::Record))
                    .col(timestamp_with_time_zone(ContactDecisions::At))
                    .check(Expr::col(ContactDecisions::Path).is_in([
                        "registered",
                        "queued",
                        "drained",
                        "manual",
                        "unassigned",
                    ]))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ContactDecisions::Table, ContactDecisions::ContactId)
                            .to(Contacts::Table, Contacts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols, unique) in [
            (
                "ux_decisions_contact_seq",
                [ContactDecisions::ContactId, ContactDecisions::Seq],
                true,
            ),
            (
                "ix_decisions_source_at",
                [ContactDecisions::SourceId, ContactDecisions::At],
                false,
            ),
            (
                "ix_decisions_operator_at",
                [ContactDecisions::OperatorId, ContactDecisions::At],
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(ContactDecisions::Table);
            for col in cols {
                index.col(col);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        let chosen = match manager.get_database_backend() {
            DbBackend::Postgres => "(decision::json->>'chosen')::bigint",
            _ => "json_extract(decision, '$.chosen')",
        };
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "INSERT INTO contact_decisions (contact_id, seq, path, source_id, operator_id, record, at) \
             SELECT id, 1, CASE WHEN {chosen} IS NULL THEN 'queued' ELSE 'registered' END, \
             source_id, {chosen}, decision, created_at FROM contacts ORDER BY id"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "INSERT INTO contact_decisions (contact_id, seq, path, source_id, operator_id, record, at) \
             SELECT id, 2, 'manual', source_id, operator_id, NULL, created_at FROM contacts \
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

#[derive(DeriveIden)]
enum Contacts {
    Table,
    Id,
}
