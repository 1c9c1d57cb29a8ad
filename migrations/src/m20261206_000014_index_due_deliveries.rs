//! The due deliveries of one endpoint, in due order, from an index that holds only the
//! pending ones.
//!
//! Every round of an endpoint's sender claims its due retries: pending rows of that
//! endpoint, oldest due first. With the index of migration 13 on `next_attempt_at` alone,
//! SQLite's planner took the endpoint's `(webhook_id, id)` index for the `webhook_id = ?`
//! term instead. It then read every delivery the endpoint ever had, delivered ones
//! included (up to retention's million), and sorted the pending ones, several times a
//! second. The metrics scrape's count of pending deliveries did the same. Found in a
//! profile of the webhook benchmark (docs/benchmarks.md, "what one webhook delivery
//! costs").
//!
//! - `(webhook_id, next_attempt_at) WHERE state = 'pending'` serves the claim (equality,
//!   then the range and order) and the count.
//! - `(event_seq) WHERE state = 'pending'` serves retention's question, "the oldest event
//!   a delivery still waits for", which walked the index of every delivery's event
//!   before.
//!
//! Both hold the few rows still due, not every delivery.

use sea_orm_migration::prelude::*;

/// Replaces `ix_webhook_deliveries_due` and adds `ix_webhook_deliveries_pending_event`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "DROP INDEX ix_webhook_deliveries_due",
            "CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries \
             (webhook_id, next_attempt_at) WHERE state = 'pending'",
            "CREATE INDEX ix_webhook_deliveries_pending_event ON webhook_deliveries \
             (event_seq) WHERE state = 'pending'",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "DROP INDEX ix_webhook_deliveries_pending_event",
            "DROP INDEX ix_webhook_deliveries_due",
            "CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) \
             WHERE state = 'pending'",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
