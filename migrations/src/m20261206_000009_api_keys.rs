//! Keys that are not a source's (`/api/keys`): today only `viewer` keys, which may read
//! everything but keys and call the dry run, for a supervisor's screen or a report. As
//! with source keys, only a SHA-256 hash of each key is stored; the key is shown once.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `api_keys`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(big_pk_auto(ApiKeys::Id))
                    .col(string_len(ApiKeys::Scope, 16))
                    .col(string_null(ApiKeys::Label))
                    .col(string(ApiKeys::Prefix))
                    .col(string_uniq(ApiKeys::Hash))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .check(Expr::col(ApiKeys::Scope).eq("viewer"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Scope,
    Label,
    Prefix,
    Hash,
    CreatedAt,
    LastUsedAt,
}
