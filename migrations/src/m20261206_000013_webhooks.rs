//! Webhook endpoints and their deliveries (the Events issue).
//!
//! An endpoint follows the outbox with a cursor of its own: `cursor` is the last event
//! whose first attempt is settled (delivered, or due again as a delivery row), and only one
//! process at a time sends an endpoint's new events (`lease_until`). Every attempted event
//! gets a `webhook_deliveries` row with its state and last outcome; rows still due are
//! claimed with their own lease (`claimed_until`), so each retry is sent by one process.
//! Deliveries go with their events when retention prunes them (it keeps events that have
//! deliveries still due).

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `webhooks` and `webhook_deliveries`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .col(big_pk_auto(Webhooks::Id))
                    .col(text(Webhooks::Url))
                    .col(text_null(Webhooks::EventTypes))
                    .col(boolean(Webhooks::Enabled))
                    .col(text_null(Webhooks::DisabledReason))
                    .col(text(Webhooks::Secret))
                    .col(text_null(Webhooks::PreviousSecret))
                    .col(timestamp_with_time_zone_null(Webhooks::PreviousSecretUntil))
                    .col(big_integer(Webhooks::Cursor))
                    .col(timestamp_with_time_zone_null(Webhooks::LeaseUntil))
                    .col(timestamp_with_time_zone(Webhooks::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    .col(big_integer(WebhookDeliveries::WebhookId))
                    .col(big_integer(WebhookDeliveries::EventSeq))
                    .col(string_len(WebhookDeliveries::State, 16))
                    .col(integer(WebhookDeliveries::Attempts))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::NextAttemptAt,
                    ))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::ClaimedUntil,
                    ))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::LastAttemptAt,
                    ))
                    .col(integer_null(WebhookDeliveries::LastStatus))
                    .col(text_null(WebhookDeliveries::LastError))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::WebhookId)
                            .to(Webhooks::Table, Webhooks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in [
            "CREATE INDEX ix_webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id)",
            "CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) \
             WHERE state = 'pending'",
            "CREATE INDEX ix_webhook_deliveries_event ON webhook_deliveries (event_seq)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Webhooks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    Url,
    EventTypes,
    Enabled,
    DisabledReason,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    Cursor,
    LeaseUntil,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    EventSeq,
    State,
    Attempts,
    NextAttemptAt,
    ClaimedUntil,
    LastAttemptAt,
    LastStatus,
    LastError,
}
