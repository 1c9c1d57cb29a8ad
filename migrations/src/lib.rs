//! Schema migrations of mini-crm. The schema changes only through these files; a file
//! is never edited once released, a new one is added instead.

pub use sea_orm_migration::{MigrationStatus, prelude::*};

mod m20261125_000001_create_schema;
mod m20261125_000002_create_idempotency_keys;
mod m20261125_000003_create_source_keys;
mod m20261205_000004_index_unassigned_backlog;
mod m20261206_000005_index_queue;
mod m20261206_000006_contact_decisions;
mod m20261206_000007_operator_pace;
mod m20261206_000008_index_decisions_at;
mod m20261206_000009_api_keys;
mod m20261206_000010_source_strategy;
mod m20261206_000011_first_entry_on_contact;
mod m20261206_000012_events;
mod m20261206_000013_webhooks;
mod m20261206_000014_index_due_deliveries;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_schema::Migration),
            Box::new(m20261125_000002_create_idempotency_keys::Migration),
            Box::new(m20261125_000003_create_source_keys::Migration),
            Box::new(m20261205_000004_index_unassigned_backlog::Migration),
            Box::new(m20261206_000005_index_queue::Migration),
            Box::new(m20261206_000006_contact_decisions::Migration),
            Box::new(m20261206_000007_operator_pace::Migration),
            Box::new(m20261206_000008_index_decisions_at::Migration),
            Box::new(m20261206_000009_api_keys::Migration),
            Box::new(m20261206_000010_source_strategy::Migration),
            Box::new(m20261206_000011_first_entry_on_contact::Migration),
            Box::new(m20261206_000012_events::Migration),
            Box::new(m20261206_000013_webhooks::Migration),
            Box::new(m20261206_000014_index_due_deliveries::Migration),
        ]
    }
}
