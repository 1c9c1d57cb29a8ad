//! The transactional outbox (the Events issue): one row per event, written by the unit of
//! work whose change it reports, and `event_log`, which remembers how far retention has
//! pruned (a reader resuming from before that mark is told to start again).
//!
//! `seq` is the events' global order. On SQLite it is the rowid: the one writer commits in
//! that order. On PostgreSQL it comes from `crm_next_event_seq()`, which first makes sure
//! its transaction has an id and only then takes the number: a reader that sees a gap below
//! a visible event then knows the gap's holder has an id below that snapshot's `xmax`, and
//! can tell when the gap is final (`crm_core::EventCursor`). A plain `nextval` default may
//! run before the transaction's id is assigned, and the reader could then pass an event
//! that commits later.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

/// Creates `events` and `event_log`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let statements: &[&str] = match manager.get_database_backend() {
            DbBackend::Postgres => &[
                "CREATE SEQUENCE events_seq",
                "CREATE FUNCTION crm_next_event_seq() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$ \
                 BEGIN PERFORM pg_current_xact_id(); RETURN nextval('events_seq'); END $$",
                "CREATE TABLE events (seq bigint PRIMARY KEY DEFAULT crm_next_event_seq(), \
                 type text NOT NULL, at timestamptz NOT NULL, contact_id bigint, data text NOT NULL)",
                "ALTER SEQUENCE events_seq OWNED BY events.seq",
                "CREATE TABLE event_log (id integer PRIMARY KEY CHECK (id = 1), \
                 pruned_through bigint NOT NULL)",
            ],
            _ => &[
                "CREATE TABLE events (seq integer PRIMARY KEY, type text NOT NULL, \
                 at timestamp_with_timezone_text NOT NULL, contact_id bigint, data text NOT NULL)",
                "CREATE TABLE event_log (id integer PRIMARY KEY CHECK (id = 1), \
                 pruned_through bigint NOT NULL)",
            ],
        };
        for statement in statements {
            db.execute_unprepared(statement).await?;
        }
        db.execute_unprepared("INSERT INTO event_log (id, pruned_through) VALUES (1, 0)")
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE event_log").await?;
        db.execute_unprepared("DROP TABLE events").await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("DROP FUNCTION crm_next_event_seq()")
                .await?;
        }
        Ok(())
    }
}
