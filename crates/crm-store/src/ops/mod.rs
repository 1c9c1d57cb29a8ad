//! Every write, written once over [`Conn`], except the registration's hot path, which
//! each backend shapes for its own costs (`sqlite::registration`, `pg::registration`), and
//! the idempotency keys (`keys`).
//! Each runs inside a unit of work the backend opened for it (a job of the SQLite writer's
//! group, undone alone if it fails, or a PostgreSQL transaction), so an error leaves
//! nothing behind. Each write that changes something stores its event in that unit of
//! work ([`crate::events::append_event`]); contacts' writes are in `contacts`.
//!
//! Lock order on PostgreSQL, to rule out deadlocks: a contact row before a source row
//! (taken by a smooth source's drains and registrations, and by weight replacements), a
//! source row before operator rows, operator rows by ascending id, and weight rows (a
//! smooth pick's credits) last.

use chrono::{DateTime, Utc};
use crm_core::{
    Entity, EventType, NewEvent, NewOperator, NewSource, NewSourceKey, OperatorFields, OperatorId,
    OperatorPatch, SourceFields, SourceId, SourceKeyId, SourcePatch, StoreError, WeightSet,
};

mod contacts;

pub use contacts::{Closed, append_decision, assign_contact, close_contact, unassign_contact};

use crate::{
    clock::now,
    conn::{Conn, DbError, returned},
    events::append_event,
    sql,
};

fn code_taken(err: DbError) -> StoreError {
    match err {
        DbError::Unique => StoreError::SourceCodeTaken,
        other => other.into(),
    }
}

/// Inserts an operator; returns its id.
pub async fn create_operator(
    conn: &impl Conn,
    new: &NewOperator,
) -> Result<OperatorId, StoreError> {
    let values = vec![
        new.name.as_str().into(),
        new.is_active.into(),
        new.max_active_contacts.get().into(),
        new.max_assignments_per_minute
            .map(|rate| i64::from(rate.get()))
            .into(),
        conn.timestamp(now()),
    ];
    let row = returned(conn.one(sql::INSERT_OPERATOR, values).await?)?;
    let id = OperatorId(row.get(0)?);
    let fields = OperatorFields {
        id,
        name: new.name.as_str(),
        is_active: new.is_active,
        max_active_contacts: new.max_active_contacts.get(),
        max_assignments_per_minute: new.max_assignments_per_minute.map(|r| i64::from(r.get())),
    };
    append_event(
        conn,
        &NewEvent::operator(EventType::OperatorCreated, &fields),
    )
    .await?;
    Ok(id)
}

/// Changes the given fields.
pub async fn update_operator(
    conn: &impl Conn,
    id: OperatorId,
    patch: &OperatorPatch,
) -> Result<(), StoreError> {
    let values = vec![
        patch.name.as_ref().map(|n| n.as_str().to_owned()).into(),
        patch.is_active.into(),
        patch.max_active_contacts.map(|m| m.get()).into(),
        patch.max_assignments_per_minute.is_some().into(),
        patch
            .max_assignments_per_minute
            .flatten()
            .map(|rate| i64::from(rate.get()))
            .into(),
        id.get().into(),
    ];
    let row = conn
        .one(sql::UPDATE_OPERATOR, values)
        .await?
        .ok_or(StoreError::NotFound(Entity::Operator))?;
    let name: String = row.get(1)?;
    let fields = OperatorFields {
        id,
        name: &name,
        is_active: row.get(2)?,
        max_active_contacts: row.get(3)?,
        max_assignments_per_minute: row.get(4)?,
    };
    append_event(
        conn,
        &NewEvent::operator(EventType::OperatorUpdated, &fields),
    )
    .await
}

/// Deletes an operator that never had contacts.
pub async fn delete_operator(conn: &impl Conn, id: OperatorId) -> Result<(), StoreError> {
    if conn
        .one(sql::OPERATOR_EXISTS, vec![id.get().into()])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound(Entity::Operator));
    }
    if conn
        .one(sql::OPERATOR_HAS_CONTACTS, vec![id.get().into()])
        .await?
        .is_some()
    {
        return Err(StoreError::OperatorHasContacts);
    }
    let sources = conn
        .all(sql::SOURCES_OF_OPERATOR, vec![id.get().into()])
        .await?
        .iter()
        .map(|row| row.get::<i64>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // A registration may have claimed it since the check above (PostgreSQL).
    conn.one(sql::DELETE_OPERATOR, vec![id.get().into()])
        .await
        .map_err(|err| match err {
            DbError::ForeignKey => StoreError::OperatorHasContacts,
            other => other.into(),
        })?;
    // Its weight rows went with it, so those sources' weights really changed: their smooth
    // credits start again from 0, as after a weights `PUT` (after the operator's row, the
    // order a registration locks them in).
    for source in sources {
        conn.all(sql::RESET_CREDITS, vec![source.into()]).await?;
    }
    append_event(conn, &NewEvent::operator_deleted(id)).await
}

/// Inserts a source; returns its id.
pub async fn create_source(conn: &impl Conn, new: &NewSource) -> Result<SourceId, StoreError> {
    let values = vec![
        new.name.as_str().into(),
        new.code.as_str().into(),
        conn.timestamp(now()),
        new.rule.strategy.as_str().into(),
        new.rule.sticky_owner.into(),
    ];
    let row = returned(
        conn.one(sql::INSERT_SOURCE, values)
            .await
            .map_err(code_taken)?,
    )?;
    let id = SourceId(row.get(0)?);
    let fields = SourceFields {
        id,
        name: new.name.as_str(),
        code: new.code.as_str(),
        rule: new.rule,
    };
    append_event(conn, &NewEvent::source(EventType::SourceCreated, &fields)).await?;
    Ok(id)
}

/// Changes the given fields.
pub async fn update_source(
    conn: &impl Conn,
    id: SourceId,
    patch: &SourcePatch,
) -> Result<(), StoreError> {
    let values = vec![
        patch.name.as_ref().map(|n| n.as_str().to_owned()).into(),
        patch.code.as_ref().map(|c| c.as_str().to_owned()).into(),
        patch.strategy.map(|s| s.as_str().to_owned()).into(),
        patch.sticky_owner.into(),
        id.get().into(),
    ];
    let row = conn
        .one(sql::UPDATE_SOURCE, values)
        .await
        .map_err(code_taken)?
        .ok_or(StoreError::NotFound(Entity::Source))?;
    let (name, code): (String, String) = (row.get(1)?, row.get(2)?);
    let fields = SourceFields {
        id,
        name: &name,
        code: &code,
        rule: sql::stored_rule(&row.get::<String>(3)?, row.get(4)?)?,
    };
    append_event(conn, &NewEvent::source(EventType::SourceUpdated, &fields)).await
}

/// Deletes a source that never had contacts.
pub async fn delete_source(conn: &impl Conn, id: SourceId) -> Result<(), StoreError> {
    if conn
        .one(sql::SOURCE_BY_ID, vec![id.get().into()])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound(Entity::Source));
    }
    if conn
        .one(sql::SOURCE_HAS_CONTACTS, vec![id.get().into()])
        .await?
        .is_some()
    {
        return Err(StoreError::SourceHasContacts);
    }
    conn.one(sql::DELETE_SOURCE, vec![id.get().into()])
        .await
        .map_err(|err| match err {
            DbError::ForeignKey => StoreError::SourceHasContacts,
            other => other.into(),
        })?;
    append_event(conn, &NewEvent::source_deleted(id)).await
}

/// Replaces a source's weights.
pub async fn replace_weights<C: Conn>(
    conn: &C,
    id: SourceId,
    weights: &WeightSet,
) -> Result<(), StoreError> {
    // Locks the source row on PostgreSQL, so concurrent replacements apply one by one.
    let locks = C::LOCKS;
    if conn
        .one(locks.source, vec![id.get().into()])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound(Entity::Source));
    }
    // On PostgreSQL each operator is kept from deletion before the old weights go: the new
    // weights' foreign keys would take that lock anyway, but only after the delete below
    // locked the old weight rows, which a concurrent `delete_operator` (operator row
    // first, then its weights by cascade) takes the other way round.
    for (index, entry) in weights.entries().iter().enumerate() {
        let exists = conn
            .one(locks.operator, vec![entry.operator_id.get().into()])
            .await?;
        if exists.is_none() {
            return Err(StoreError::UnknownOperator {
                index: Some(index),
                operator_id: entry.operator_id,
            });
        }
    }
    // The same weights again change nothing, and keep the smooth state; any real change
    // replaces every row, so every credit starts again from 0 (the Strategies issue).
    let current = conn
        .all(sql::SOURCE_WEIGHTS, vec![id.get().into()])
        .await?
        .iter()
        .map(|row| Ok((OperatorId(row.get(0)?), row.get::<i64>(1)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    if weights.is_same_as(&current) {
        return Ok(());
    }
    conn.all(sql::DELETE_WEIGHTS, vec![id.get().into()]).await?;
    for entry in weights.entries() {
        let values = vec![
            entry.operator_id.get().into(),
            id.get().into(),
            entry.weight.get().into(),
        ];
        conn.one(sql::INSERT_WEIGHT, values).await?;
    }
    append_event(conn, &NewEvent::weights_replaced(id, weights)).await
}

/// Stores a source's key; returns its id.
pub async fn create_source_key(
    conn: &impl Conn,
    new: &NewSourceKey,
) -> Result<SourceKeyId, StoreError> {
    if conn
        .one(sql::SOURCE_BY_ID, vec![new.source_id.get().into()])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound(Entity::Source));
    }
    let values = vec![
        new.source_id.get().into(),
        new.label.as_ref().map(|l| l.as_str().to_owned()).into(),
        new.prefix.as_str().into(),
        new.hash.as_str().into(),
        conn.timestamp(now()),
    ];
    let row = returned(conn.one(sql::INSERT_SOURCE_KEY, values).await?)?;
    Ok(SourceKeyId(row.get(0)?))
}

/// Revokes a source's key.
pub async fn delete_source_key(
    conn: &impl Conn,
    source_id: SourceId,
    key_id: SourceKeyId,
) -> Result<(), StoreError> {
    conn.one(
        sql::DELETE_SOURCE_KEY,
        vec![key_id.get().into(), source_id.get().into()],
    )
    .await?
    .map(drop)
    .ok_or(StoreError::NotFound(Entity::Source))
}

/// Whether a key last used at `last_used_at` should have its use recorded now: at most
/// once a minute per key, since a write per request would cost every request made with a
/// key a trip through the writer.
pub fn key_use_due(last_used_at: Option<DateTime<Utc>>) -> bool {
    last_used_at.is_none_or(|t| now() - t > chrono::Duration::minutes(1))
}

/// Notes that a key was used now.
pub async fn touch_source_key(conn: &impl Conn, key_id: SourceKeyId) -> Result<(), StoreError> {
    conn.one(
        sql::TOUCH_SOURCE_KEY,
        vec![conn.timestamp(now()), key_id.get().into()],
    )
    .await?;
    Ok(())
}
