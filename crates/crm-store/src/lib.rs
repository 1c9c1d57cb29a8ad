//! SeaORM adapters of the mini-crm ports.
//!
//! [`connect`] opens the database named by a URL, runs the migrations and returns a
//! [`DbStore`], which implements [`crm_core::Store`]. On SQLite (the embedded default)
//! every write goes through one writer thread with group commit, and reads use a
//! read-only pool beside it.

mod api_keys;
mod clock;
mod config;
mod conn;
mod drain;
mod entity;
mod error;
mod events;
mod insight;
mod keys;
mod migrate;
mod ops;
mod pg;
mod read;
mod source_keys;
mod sql;
mod sqlite;
pub mod testing;
mod url;

use std::time::Duration;

use crm_core::{
    ApiKey, ApiKeyId, Candidate, Contact, ContactFilter, ContactId, DecisionEntry, EventCursor,
    EventPage, IdempotencyKey, Lead, LeadFilter, LeadId, LeadWithContacts, NewApiKey, NewContact,
    NewOperator, NewSource, NewSourceKey, Operator, OperatorFilter, OperatorId, OperatorLoad,
    OperatorPatch, OperatorStats, PoolStatus, Registration, Source, SourceDecision, SourceId,
    SourceKey, SourceKeyId, SourcePatch, SourceQueue, Store, StoreError, WeightSet, Window,
    register_contact, register_contact_once,
};
use drain::Scope;
use sqlite::outbox::Tail;

pub use clock::Clock;
pub use config::{ConnectError, StoreConfig};
pub use migrate::{MigrateAction, MigrationState, migrate};
pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use url::{DEFAULT_DATABASE_URL, DatabaseUrl, PgUrl, SqliteUrl, UrlError};

/// Runs `$call` on whichever backend `$store` holds, named `$backend`: the same call,
/// compiled once for each (written like a closure so that rustfmt lays it out).
macro_rules! either {
    ($store:expr, |$backend:ident| $call:expr) => {
        match $store {
            DbStore::Sqlite($backend) => $call,
            DbStore::Postgres($backend) => $call,
        }
    };
}

mod maintenance;
mod webhooks;

/// A generator of its own for each registration or drain: replicas share nothing.
pub(crate) fn fresh_rng() -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::from_rng(&mut rand::rng())
}

/// A connected store: the backend the URL named.
pub enum DbStore {
    /// The SQLite writer thread and read pool.
    Sqlite(SqliteStore),
    /// The PostgreSQL pool.
    Postgres(PgStore),
}

/// Opens the database, runs migrations and, on SQLite, starts the writer.
///
/// # Errors
/// [`ConnectError`] when the database cannot be opened, locked or migrated.
pub async fn connect(config: &StoreConfig) -> Result<DbStore, ConnectError> {
    Ok(match &config.database_url {
        DatabaseUrl::Sqlite(url) => DbStore::Sqlite(sqlite::open(url, config).await?),
        DatabaseUrl::Postgres(url) => DbStore::Postgres(pg::open(url, config).await?),
    })
}

/// Every use case runs in a `debug` span named after it (the request span is its parent);
/// SeaORM adds a `trace` span per statement.
impl Store for DbStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn health(&self) -> Result<(), StoreError> {
        either!(self, |db| db.health().await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_operator(&self, new: NewOperator) -> Result<Operator, StoreError> {
        let id = either!(self, |db| db
            .write(async move |conn| ops::create_operator(conn, &new).await)
            .await)?;
        read::operator(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_operators(&self, filter: OperatorFilter) -> Result<Vec<Operator>, StoreError> {
        read::operators(self.reader(), filter).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_operator(&self, id: OperatorId) -> Result<Operator, StoreError> {
        read::operator(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_operator(
        &self,
        id: OperatorId,
        patch: OperatorPatch,
    ) -> Result<Operator, StoreError> {
        // An operator activated or given a higher limit may take waiting contacts.
        either!(self, |db| db
            .write_draining(
                async move |conn| ops::update_operator(conn, id, &patch).await,
                move |()| Some(Scope::Operator(id)),
            )
            .await)?;
        read::operator(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_operator(&self, id: OperatorId) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| ops::delete_operator(conn, id).await)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_source(&self, new: NewSource) -> Result<Source, StoreError> {
        let id = either!(self, |db| db
            .write(async move |conn| ops::create_source(conn, &new).await)
            .await)?;
        read::source(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_sources(&self) -> Result<Vec<Source>, StoreError> {
        read::sources(self.reader()).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_source(&self, id: SourceId) -> Result<Source, StoreError> {
        read::source(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_source(&self, id: SourceId, patch: SourcePatch) -> Result<Source, StoreError> {
        either!(self, |db| db
            .write(async move |conn| ops::update_source(conn, id, &patch).await)
            .await)?;
        read::source(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_source(&self, id: SourceId) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| ops::delete_source(conn, id).await)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn replace_weights(
        &self,
        id: SourceId,
        weights: WeightSet,
    ) -> Result<Source, StoreError> {
        // A weight added or raised may make someone eligible for the source's queue.
        either!(self, |db| db
            .write_draining(
                async move |conn| ops::replace_weights(conn, id, &weights).await,
                move |()| Some(Scope::Source(id)),
            )
            .await)?;
        read::source(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_leads(&self, filter: LeadFilter) -> Result<Vec<Lead>, StoreError> {
        read::leads(self.reader(), filter).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_lead(&self, id: LeadId) -> Result<LeadWithContacts, StoreError> {
        read::lead(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn register_contact(&self, new: NewContact) -> Result<Contact, StoreError> {
        let registered = match self {
            Self::Sqlite(db) => {
                db.register(async move |tx, rng| register_contact(tx, &new, rng).await)
                    .await
            }
            // A smooth source's registration asks for a transaction (its credits move
            // under the source's lock): run it again in one.
            Self::Postgres(db) => match db
                .register(async |tx, rng| register_contact(tx, &new, rng).await)
                .await
            {
                Err(StoreError::Unavailable(err))
                    if err.is::<pg::registration::NeedsTransaction>() =>
                {
                    db.register_keyed(async move |tx, rng| register_contact(tx, &new, rng).await)
                        .await
                }
                other => other,
            },
        }?;
        self.drain_after(&registered.contact).await;
        Ok(registered.contact)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn register_contact_once(
        &self,
        new: NewContact,
        key: IdempotencyKey,
    ) -> Result<Registration, StoreError> {
        let registration = match self {
            Self::Sqlite(db) => {
                db.register(async move |tx, rng| register_contact_once(tx, &new, &key, rng).await)
                    .await
            }
            Self::Postgres(db) => {
                db.register_keyed(async move |tx, rng| {
                    register_contact_once(tx, &new, &key, rng).await
                })
                .await
            }
        }?;
        if !registration.replayed {
            self.drain_after(&registration.contact).await;
        }
        Ok(registration)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_contacts(&self, filter: ContactFilter) -> Result<Vec<Contact>, StoreError> {
        read::contacts(self.reader(), filter).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_contact(&self, id: ContactId) -> Result<Contact, StoreError> {
        read::contact(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn close_contact(&self, id: ContactId) -> Result<Contact, StoreError> {
        // The freed place goes to the oldest waiting contact the operator may take.
        let closed = match self {
            Self::Sqlite(db) => db.close_contact(id).await?,
            Self::Postgres(db) => {
                db.write_draining(
                    async |conn| ops::close_contact(conn, id).await,
                    |closed| closed.released().map(Scope::Operator),
                )
                .await?
            }
        };
        // The close's own unit of work returned the contact as it left it (a drain after it
        // does not change it); only one closed before is read.
        match closed {
            ops::Closed::Now(contact) => Ok(contact),
            ops::Closed::Already => read::contact(self.reader(), id).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn assign_contact(
        &self,
        id: ContactId,
        operator_id: OperatorId,
    ) -> Result<Contact, StoreError> {
        // A contact moved away frees a place of its previous operator (which one is not
        // returned, so every source is looked at); one taken from the queue changes nothing.
        either!(self, |db| db
            .write_draining(
                async move |conn| ops::assign_contact(conn, id, operator_id).await,
                |()| Some(Scope::All),
            )
            .await)?;
        read::contact(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unassign_contact(&self, id: ContactId) -> Result<Contact, StoreError> {
        either!(self, |db| db
            .write_draining(
                async move |conn| ops::unassign_contact(conn, id).await,
                move |taken| {
                    taken.map(|(from, source)| Scope::Unassigned {
                        contact: id,
                        source,
                        from,
                    })
                },
            )
            .await)?;
        read::contact(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn operator_stats(&self) -> Result<Vec<OperatorStats>, StoreError> {
        read::stats(self.reader(), self.now()).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn operator_loads(&self) -> Result<Vec<OperatorLoad>, StoreError> {
        read::operator_loads(self.reader()).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn contact_decisions(&self, id: ContactId) -> Result<Vec<DecisionEntry>, StoreError> {
        read::decisions(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn source_decisions<'a>(
        &'a self,
        source: SourceId,
        window: Window,
        sink: &'a mut (dyn FnMut(SourceDecision) + Send),
    ) -> Result<u64, StoreError> {
        insight::source_decisions(self.reader(), source, window, sink).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn source_assignments(
        &self,
        source: SourceId,
        window: Window,
    ) -> Result<Vec<(OperatorId, u64)>, StoreError> {
        insight::source_assignments(self.reader(), source, window).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn candidates(
        &self,
        weights: &[(OperatorId, i64)],
    ) -> Result<Vec<Candidate>, StoreError> {
        insight::candidates(self.reader(), weights, self.now()).await
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        either!(self, |db| db.clock.now())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn queue(
        &self,
        stale_before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<SourceQueue>, StoreError> {
        read::queue(self.reader(), stale_before).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn drain_queue(&self) -> Result<usize, StoreError> {
        let drained = match self {
            Self::Sqlite(db) => db.drain_all().await?,
            Self::Postgres(db) => db.drain(Scope::All, std::time::Instant::now()).await?,
        };
        Ok(drained.assigned.len())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_source_key(&self, new: NewSourceKey) -> Result<SourceKey, StoreError> {
        let id = either!(self, |db| db
            .write(async move |conn| ops::create_source_key(conn, &new).await)
            .await)?;
        source_keys::source_key(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_source_keys(&self, source_id: SourceId) -> Result<Vec<SourceKey>, StoreError> {
        source_keys::source_keys(self.reader(), source_id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_source_key(
        &self,
        source_id: SourceId,
        key_id: SourceKeyId,
    ) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| ops::delete_source_key(conn, source_id, key_id).await)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKey, StoreError> {
        let id = either!(self, |db| db
            .write(async move |conn| api_keys::create(conn, &new).await)
            .await)?;
        api_keys::one(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        api_keys::list(self.reader()).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| api_keys::delete(conn, id).await)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn authenticate_api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let Some(key) = api_keys::by_hash(self.reader(), hash).await? else {
            return Ok(None);
        };
        if ops::key_use_due(key.last_used_at) {
            let id = key.id;
            either!(self, |db| db
                .write(async move |conn| api_keys::touch(conn, id).await)
                .await)?;
        }
        Ok(Some(key))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn authenticate_source_key(&self, hash: &str) -> Result<Option<SourceKey>, StoreError> {
        let Some(key) = source_keys::source_key_by_hash(self.reader(), hash).await? else {
            return Ok(None);
        };
        if ops::key_use_due(key.last_used_at) {
            let id = key.id;
            either!(self, |db| db
                .write(async move |conn| ops::touch_source_key(conn, id).await)
                .await)?;
        }
        Ok(Some(key))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_events(
        &self,
        cursor: EventCursor,
        limit: u32,
    ) -> Result<(EventCursor, EventPage), StoreError> {
        match self.tail().and_then(|tail| tail.read(cursor, limit)) {
            Some(read) => Ok(read),
            None => events::read(self.reader(), cursor, limit).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn settled_event_head(&self) -> Result<u64, StoreError> {
        match self.tail().and_then(Tail::newest) {
            Some(newest) => Ok(newest),
            None => events::settled_head(self.reader()).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<EventPage, StoreError> {
        match self
            .tail()
            .and_then(|tail| tail.between(after, upto, limit))
        {
            Some(page) => Ok(page),
            None => events::between(self.reader(), after, upto, limit).await,
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn prune_events(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        keep: u64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        either!(self, |db| db
            .write(async move |conn| events::prune(conn, before, keep, batch).await)
            .await)
    }

    fn pool_status(&self) -> PoolStatus {
        either!(self, |db| db.pool_status())
    }

    fn take_drain_latencies(&self) -> Vec<Duration> {
        either!(self, |db| db.drain_log.take_latencies())
    }
}
