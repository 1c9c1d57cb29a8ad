//! Idempotency keys of contact registrations: a retried `POST /api/contacts` with the
//! same key replays the first answer instead of registering again.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `idempotency_keys`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    // Whose key: the credential's identity, so two clients cannot collide.
                    .col(string(IdempotencyKeys::Credential))
                    .col(string(IdempotencyKeys::Key))
                    // A digest of the request body after parsing.
                    .col(string(IdempotencyKeys::Fingerprint))
                    // The contact as first answered; written in the registration's own
                    // transaction, so a committed key always has one.
                    .col(text_null(IdempotencyKeys::Snapshot))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Credential)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_created_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Credential,
    Key,
    Fingerprint,
    Snapshot,
    CreatedAt,
}
