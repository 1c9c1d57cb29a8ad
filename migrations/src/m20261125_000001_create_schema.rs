//! The initial schema: operators with their load counter, sources, weights, leads and
//! contacts with the decision that placed them.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates every table and index.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Operators::Table)
                    .col(big_pk_auto(Operators::Id))
                    .col(string(Operators::Name))
                    .col(boolean(Operators::IsActive))
                    .col(big_integer(Operators::MaxActiveContacts))
                    // The load: open contacts assigned to this operator, kept in the same
                    // transaction as the contacts it counts.
                    .col(big_integer(Operators::OpenContacts).default(0))
                    .col(timestamp_with_time_zone(Operators::CreatedAt))
                    .check(Expr::col(Operators::OpenContacts).gte(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sources::Table)
                    .col(big_pk_auto(Sources::Id))
                    .col(string(Sources::Name))
                    .col(string_uniq(Sources::Code))
                    .col(timestamp_with_time_zone(Sources::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OperatorSourceWeights::Table)
                    .col(big_pk_auto(OperatorSourceWeights::Id))
                    .col(big_integer(OperatorSourceWeights::OperatorId))
                    .col(big_integer(OperatorSourceWeights::SourceId))
                    .col(big_integer(OperatorSourceWeights::Weight))
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                OperatorSourceWeights::Table,
                                OperatorSourceWeights::OperatorId,
                            )
                            .to(Operators::Table, Operators::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                OperatorSourceWeights::Table,
                                OperatorSourceWeights::SourceId,
                            )
                            .to(Sources::Table, Sources::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .index(
                        Index::create()
                            .name("ux_weights_operator_source")
                            .col(OperatorSourceWeights::OperatorId)
                            .col(OperatorSourceWeights::SourceId)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_weights_source")
                    .table(OperatorSourceWeights::Table)
                    .col(OperatorSourceWeights::SourceId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Leads::Table)
                    .col(big_pk_auto(Leads::Id))
                    .col(string_uniq(Leads::ExternalId))
                    .col(timestamp_with_time_zone(Leads::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Contacts::Table)
                    .col(big_pk_auto(Contacts::Id))
                    .col(big_integer(Contacts::LeadId))
                    .col(big_integer(Contacts::SourceId))
                    .col(big_integer_null(Contacts::OperatorId))
                    .col(string_len(Contacts::Status, 16))
                    .col(text(Contacts::Payload))
                    .col(text_null(Contacts::Decision))
                    .col(timestamp_with_time_zone(Contacts::CreatedAt))
                    .col(timestamp_with_time_zone_null(Contacts::ClosedAt))
                    .check(Expr::col(Contacts::Status).is_in(["open", "closed"]))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Contacts::Table, Contacts::LeadId)
                            .to(Leads::Table, Leads::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Contacts::Table, Contacts::SourceId)
                            .to(Sources::Table, Sources::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Contacts::Table, Contacts::OperatorId)
                            .to(Operators::Table, Operators::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // An operator's open contacts (and all its contacts) are an index range.
        for (name, cols) in [
            (
                "ix_contacts_operator_status",
                vec![Contacts::OperatorId, Contacts::Status],
            ),
            ("ix_contacts_lead", vec![Contacts::LeadId]),
            ("ix_contacts_source", vec![Contacts::SourceId]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Contacts::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Contacts::Table.into_iden(),
            Leads::Table.into_iden(),
            OperatorSourceWeights::Table.into_iden(),
            Sources::Table.into_iden(),
            Operators::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Operators {
    Table,
    Id,
    Name,
    IsActive,
    MaxActiveContacts,
    OpenContacts,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sources {
    Table,
    Id,
    Name,
    Code,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OperatorSourceWeights {
    Table,
    Id,
    OperatorId,
    SourceId,
    Weight,
}

#[derive(DeriveIden)]
enum Leads {
    Table,
    Id,
    ExternalId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Contacts {
    Table,
    Id,
    LeadId,
    SourceId,
    OperatorId,
    Status,
    Payload,
    Decision,
    CreatedAt,
    ClosedAt,
}
