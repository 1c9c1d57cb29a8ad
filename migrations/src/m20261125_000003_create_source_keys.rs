//! Per-source ingest keys: a key lets a bot register contacts for its own source only.
//! Only a SHA-256 hash of each key is stored; the key itself is shown once.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `source_keys`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SourceKeys::Table)
                    .col(big_pk_auto(SourceKeys::Id))
                    .col(big_integer(SourceKeys::SourceId))
                    .col(string_null(SourceKeys::Label))
                    // The first characters of the key, to tell keys apart in listings.
                    .col(string(SourceKeys::Prefix))
                    .col(string_uniq(SourceKeys::Hash))
                    .col(timestamp_with_time_zone(SourceKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(SourceKeys::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SourceKeys::Table, SourceKeys::SourceId)
                            .to(Sources::Table, Sources::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_source_keys_source")
                    .table(SourceKeys::Table)
                    .col(SourceKeys::SourceId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SourceKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SourceKeys {
    Table,
    Id,
    SourceId,
    Label,
    Prefix,
    Hash,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Sources {
    Table,
    Id,
}
