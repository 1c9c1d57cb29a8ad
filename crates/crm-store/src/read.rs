//! The read side, shared by both backends: SeaORM queries over an async connection pool.
//! On SQLite the pool is read-only and runs beside the writer (WAL).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use crm_core::{
    AssignmentsPerMinute, Contact, ContactFilter, ContactId, ContactStatus, DecisionEntry,
    DecisionPath, Entity, Lead, LeadFilter, LeadId, LeadWithContacts, MaxActiveContacts, Operator,
    OperatorFilter, OperatorId, OperatorLoad, OperatorStats, OperatorSummary, Payload, PoolStatus,
    Source, SourceCode, SourceId, SourceOperator, SourceQueue, SourceRule, StoreError, ValueError,
    Weight,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use crate::{
    entity::{contact, lead, operator, source, weight},
    error::{broken, db_err},
};

/// Checks that the database answers a trivial query.
pub async fn health(db: &DatabaseConnection) -> Result<(), StoreError> {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT 1",
    ))
    .await
    .map(drop)
    .map_err(|err| StoreError::Unavailable(Box::new(NoAnswer(err))))
}

/// Why `/health` fails when a query does: its message is what the caller sees, the
/// driver's error (which may name hosts) is only its source, for the log.
#[derive(Debug, thiserror::Error)]
#[error("the database does not answer")]
struct NoAnswer(#[source] sea_orm::DbErr);

/// Operators by id.
pub async fn operators(
    db: &DatabaseConnection,
    filter: OperatorFilter,
) -> Result<Vec<Operator>, StoreError> {
    let mut query = operator::Entity::find().order_by_asc(operator::Column::Id);
    if let Some(is_active) = filter.is_active {
        query = query.filter(operator::Column::IsActive.eq(is_active));
    }
    let rows = query.all(db).await.map_err(db_err)?;
    rows.into_iter().map(to_operator).collect()
}

/// One operator.
pub async fn operator(db: &DatabaseConnection, id: OperatorId) -> Result<Operator, StoreError> {
    operator::Entity::find_by_id(id.get())
        .one(db)
        .await
        .map_err(db_err)?
        .map_or(Err(StoreError::NotFound(Entity::Operator)), to_operator)
}

/// All sources with their weights.
pub async fn sources(db: &DatabaseConnection) -> Result<Vec<Source>, StoreError> {
    let rows = source::Entity::find()
        .order_by_asc(source::Column::Id)
        .all(db)
        .await
        .map_err(db_err)?;
    let mut weights = weights_by_source(db, None).await?;
    rows.into_iter()
        .map(|row| {
            let operators = weights.remove(&row.id).unwrap_or_default();
            to_source(row, operators)
        })
        .collect()
}

/// One source with its weights.
pub async fn source(db: &DatabaseConnection, id: SourceId) -> Result<Source, StoreError> {
    let row = source::Entity::find_by_id(id.get())
        .one(db)
        .await
        .map_err(db_err)?
        .ok_or(StoreError::NotFound(Entity::Source))?;
    let mut weights = weights_by_source(db, Some(id)).await?;
    let operators = weights.remove(&row.id).unwrap_or_default();
    to_source(row, operators)
}

/// A page of leads by id.
pub async fn leads(db: &DatabaseConnection, filter: LeadFilter) -> Result<Vec<Lead>, StoreError> {
    let mut query = lead::Entity::find().order_by_asc(lead::Column::Id);
    if let Some(external_id) = filter.external_id {
        query = query.filter(lead::Column::ExternalId.eq(external_id));
    }
    if let Some(after) = filter.page.after {
        query = query.filter(lead::Column::Id.gt(after));
    }
    let rows = query
        .limit(u64::from(filter.page.limit))
        .all(db)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(to_lead).collect())
}

/// One lead with its contacts, oldest first.
pub async fn lead(db: &DatabaseConnection, id: LeadId) -> Result<LeadWithContacts, StoreError> {
    let row = lead::Entity::find_by_id(id.get())
        .one(db)
        .await
        .map_err(db_err)?
        .ok_or(StoreError::NotFound(Entity::Lead))?;
    let rows = contact::Entity::find()
        .find_also_related(operator::Entity)
        .filter(contact::Column::LeadId.eq(id.get()))
        .order_by_asc(contact::Column::Id)
        .all(db)
        .await
        .map_err(db_err)?;
    let contacts = rows
        .into_iter()
        .map(|(c, o)| to_contact(c, o))
        .collect::<Result<_, _>>()?;
    Ok(LeadWithContacts {
        lead: to_lead(row),
        contacts,
    })
}

/// A page of contacts by id.
pub async fn contacts(
    db: &DatabaseConnection,
    filter: ContactFilter,
) -> Result<Vec<Contact>, StoreError> {
    let mut query = contact::Entity::find()
        .find_also_related(operator::Entity)
        .order_by_asc(contact::Column::Id);
    if let Some(status) = filter.status {
        query = query.filter(contact::Column::Status.eq(status.as_str()));
    }
    if let Some(operator_id) = filter.operator_id {
        query = query.filter(contact::Column::OperatorId.eq(operator_id.get()));
    }
    if let Some(source_id) = filter.source_id {
        query = query.filter(contact::Column::SourceId.eq(source_id.get()));
    }
    if let Some(lead_id) = filter.lead_id {
        query = query.filter(contact::Column::LeadId.eq(lead_id.get()));
    }
    if filter.unassigned {
        query = query.filter(contact::Column::OperatorId.is_null());
    }
    if let Some(after) = filter.page.after {
        query = query.filter(contact::Column::Id.gt(after));
    }
    let rows = query
        .limit(u64::from(filter.page.limit))
        .all(db)
        .await
        .map_err(db_err)?;
    rows.into_iter().map(|(c, o)| to_contact(c, o)).collect()
}

/// One contact.
pub async fn contact(db: &DatabaseConnection, id: ContactId) -> Result<Contact, StoreError> {
    let (row, operator) = contact::Entity::find_by_id(id.get())
        .find_also_related(operator::Entity)
        .one(db)
        .await
        .map_err(db_err)?
        .ok_or(StoreError::NotFound(Entity::Contact))?;
    to_contact(row, operator)
}

/// Load figures of every operator, with its assignments before `now` and the waiting
/// contacts it had no room for ([`crate::insight::recent_assignments`],
/// [`crate::insight::waiting_for_capacity`]).
pub async fn stats(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<Vec<OperatorStats>, StoreError> {
    let operators = operator::Entity::find()
        .order_by_asc(operator::Column::Id)
        .all(db)
        .await
        .map_err(db_err)?;
    let totals: HashMap<i64, i64> = contact::Entity::find()
        .select_only()
        .column(contact::Column::OperatorId)
        .column_as(contact::Column::Id.count(), "total")
        .filter(contact::Column::OperatorId.is_not_null())
        .group_by(contact::Column::OperatorId)
        .into_tuple::<(i64, i64)>()
        .all(db)
        .await
        .map_err(db_err)?
        .into_iter()
        .collect();
    let recent = crate::insight::recent_assignments(db, now).await?;
    let waiting = crate::insight::waiting_for_capacity(db).await?;
    operators
        .into_iter()
        .map(|o| {
            let (hour, day) = recent.get(&o.id).copied().unwrap_or_default();
            Ok(OperatorStats {
                operator_id: OperatorId(o.id),
                total_contacts: totals.get(&o.id).copied().unwrap_or(0),
                assigned_last_hour: hour,
                assigned_last_day: day,
                waiting_for_capacity: waiting.get(&o.id).copied().unwrap_or(0),
                operator_name: o.name,
                max_active_contacts: stored(MaxActiveContacts::new(o.max_active_contacts))?,
                open_contacts: o.open_contacts,
            })
        })
        .collect()
}

/// Every operator's counters: the `operators` table only.
pub async fn operator_loads(db: &DatabaseConnection) -> Result<Vec<OperatorLoad>, StoreError> {
    let rows = operator::Entity::find()
        .select_only()
        .column(operator::Column::Id)
        .column(operator::Column::MaxActiveContacts)
        .column(operator::Column::OpenContacts)
        .order_by_asc(operator::Column::Id)
        .into_tuple::<(i64, i64, i64)>()
        .all(db)
        .await
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(id, max_active_contacts, open_contacts)| {
            Ok(OperatorLoad {
                operator_id: OperatorId(id),
                max_active_contacts: stored(MaxActiveContacts::new(max_active_contacts))?,
                open_contacts,
            })
        })
        .collect()
}

/// Each source's waiting queue: the count and the oldest id from the partial index
/// `ix_contacts_queue` alone (migration `m20261206_000005`: it holds only the queue, in
/// `(source_id, id)` order, so the `GROUP BY` needs no sort), then one row per source for
/// the oldest one's arrival. Literals rather than bound parameters: a database may use a
/// partial index only where it can prove the query's `WHERE` implies the index's, which a
/// parameter's value does not show at planning time.
pub const QUEUE_SQL: &str = "SELECT q.source_id, q.waiting, q.oldest, c.created_at \
     FROM (SELECT source_id, COUNT(*) AS waiting, MIN(id) AS oldest FROM contacts \
     WHERE operator_id IS NULL AND status = 'open' GROUP BY source_id) q \
     JOIN contacts c ON c.id = q.oldest";

/// The waiting contacts that arrived before `$1`, per source: each waiting contact's row is
/// read for its arrival, so this costs in proportion to the queue.
const STALE_SQL: &str = "SELECT source_id, COUNT(*) FROM contacts \
     WHERE operator_id IS NULL AND status = 'open' AND created_at < $1 GROUP BY source_id";

/// The waiting queue per source, by source id (see [`QUEUE_SQL`]; sorted here, where a
/// few rows cost nothing, rather than by a sort step in the plan), with the contacts that
/// arrived before `stale_before` counted when it is given ([`STALE_SQL`]).
pub async fn queue(
    db: &DatabaseConnection,
    stale_before: Option<DateTime<Utc>>,
) -> Result<Vec<SourceQueue>, StoreError> {
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), QUEUE_SQL))
        .await
        .map_err(db_err)?;
    let mut queue = rows
        .iter()
        .map(|row| {
            Ok(SourceQueue {
                source_id: SourceId(row.try_get_by_index(0).map_err(db_err)?),
                waiting: row.try_get_by_index(1).map_err(db_err)?,
                oldest_id: ContactId(row.try_get_by_index(2).map_err(db_err)?),
                oldest_since: row.try_get_by_index::<DateTime<Utc>>(3).map_err(db_err)?,
                stale: 0,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    queue.sort_unstable_by_key(|q| q.source_id);
    if let Some(before) = stale_before {
        let backend = db.get_database_backend();
        let before = crate::conn::read_side_time(backend, before);
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, STALE_SQL, [before]))
            .await
            .map_err(db_err)?;
        for row in rows {
            let source = SourceId(row.try_get_by_index(0).map_err(db_err)?);
            let stale: i64 = row.try_get_by_index(1).map_err(db_err)?;
            if let Some(q) = queue.iter_mut().find(|q| q.source_id == source) {
                q.stale = stale;
            }
        }
    }
    Ok(queue)
}

/// Contact `id`'s decision history, oldest first: the first entry from the contact's row
/// (migration `m20261206_000011`), the rest a range of the history's primary key, which
/// packs `(contact_id, seq)` (migration `m20261206_000006`).
pub async fn decisions(
    db: &DatabaseConnection,
    id: ContactId,
) -> Result<Vec<DecisionEntry>, StoreError> {
    // The first entry's columns only: not the payload, which may be large.
    let (registered, record, at): (Option<i64>, Option<String>, DateTime<Utc>) =
        contact::Entity::find_by_id(id.get())
            .select_only()
            .columns([
                contact::Column::RegisteredOperatorId,
                contact::Column::Decision,
                contact::Column::CreatedAt,
            ])
            .into_tuple()
            .one(db)
            .await
            .map_err(db_err)?
            .ok_or(StoreError::NotFound(Entity::Contact))?;
    let registered = registered.map(OperatorId);
    let first = DecisionEntry {
        seq: 1,
        path: DecisionPath::of_registration(registered),
        operator_id: registered,
        record,
        at,
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT seq, path, operator_id, record, at FROM contact_decisions \
             WHERE id BETWEEN $1 * 65536 AND $1 * 65536 + 65535 AND contact_id = $1 \
             ORDER BY id",
            [id.get().into()],
        ))
        .await
        .map_err(db_err)?;
    std::iter::once(Ok(first))
        .chain(rows.iter().map(|row| {
            let path: String = row.try_get_by_index(1).map_err(db_err)?;
            Ok(DecisionEntry {
                seq: i64::from(row.try_get_by_index::<i32>(0).map_err(db_err)?),
                path: path.parse().map_err(|_| broken("decision path"))?,
                operator_id: row
                    .try_get_by_index::<Option<i64>>(2)
                    .map_err(db_err)?
                    .map(OperatorId),
                record: row.try_get_by_index(3).map_err(db_err)?,
                at: row.try_get_by_index(4).map_err(db_err)?,
            })
        }))
        .collect()
}

/// A read pool's figures, as its backend's pool reports them.
pub fn pool_status(connections: u32, idle: usize, max_connections: u32) -> PoolStatus {
    PoolStatus {
        connections,
        idle: u32::try_from(idle).unwrap_or(u32::MAX),
        max_connections,
        queued_writes: None,
        write_group_reruns: None,
    }
}

async fn weights_by_source(
    db: &DatabaseConnection,
    only: Option<SourceId>,
) -> Result<BTreeMap<i64, Vec<SourceOperator>>, StoreError> {
    let mut query = weight::Entity::find()
        .find_also_related(operator::Entity)
        .order_by_asc(weight::Column::SourceId)
        .order_by_asc(weight::Column::OperatorId);
    if let Some(id) = only {
        query = query.filter(weight::Column::SourceId.eq(id.get()));
    }
    let rows = query.all(db).await.map_err(db_err)?;
    let mut by_source: BTreeMap<i64, Vec<SourceOperator>> = BTreeMap::new();
    for (w, o) in rows {
        let operator = o.ok_or_else(|| broken("a weight names a missing operator"))?;
        by_source
            .entry(w.source_id)
            .or_default()
            .push(SourceOperator {
                operator: summary(&operator),
                weight: stored(Weight::new(w.weight))?,
                credit: w.credit,
            });
    }
    Ok(by_source)
}

/// A value read back as the validated type it was written as; one that no longer is means
/// the database was changed behind the service's back.
fn stored<T>(value: Result<T, ValueError>) -> Result<T, StoreError> {
    value.map_err(|_| broken("a stored value is out of its range"))
}

fn to_operator(row: operator::Model) -> Result<Operator, StoreError> {
    Ok(Operator {
        id: OperatorId(row.id),
        name: row.name,
        is_active: row.is_active,
        max_active_contacts: stored(MaxActiveContacts::new(row.max_active_contacts))?,
        max_assignments_per_minute: row
            .max_assignments_per_minute
            .map(|rate| stored(AssignmentsPerMinute::new(rate)))
            .transpose()?,
        open_contacts: row.open_contacts,
        created_at: row.created_at,
    })
}

fn summary(row: &operator::Model) -> OperatorSummary {
    OperatorSummary {
        id: OperatorId(row.id),
        name: row.name.clone(),
        is_active: row.is_active,
    }
}

fn to_source(row: source::Model, operators: Vec<SourceOperator>) -> Result<Source, StoreError> {
    Ok(Source {
        id: SourceId(row.id),
        name: row.name,
        code: stored(SourceCode::parse(&row.code))?,
        created_at: row.created_at,
        rule: SourceRule {
            strategy: stored(row.strategy.parse())?,
            sticky_owner: row.sticky_owner,
        },
        operators,
    })
}

fn to_lead(row: lead::Model) -> Lead {
    Lead {
        id: LeadId(row.id),
        external_id: row.external_id,
        created_at: row.created_at,
    }
}

fn to_contact(
    row: contact::Model,
    operator: Option<operator::Model>,
) -> Result<Contact, StoreError> {
    Ok(Contact {
        id: ContactId(row.id),
        lead_id: LeadId(row.lead_id),
        source_id: SourceId(row.source_id),
        operator: operator.as_ref().map(summary),
        status: ContactStatus::from_db(&row.status)
            .ok_or_else(|| broken("a contact has an unknown status"))?,
        payload: Payload::from_stored(row.payload),
        created_at: row.created_at,
        closed_at: row.closed_at,
        waiting_ahead: None,
    })
}
