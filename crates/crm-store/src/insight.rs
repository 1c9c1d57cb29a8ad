//! The read side of the reports (`crm_core::source_distribution`, `crm_core::simulate`):
//! a source's history over a window of time, and operators as the rule would see them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crm_core::{
    AssignmentsPerMinute, Candidate, DecisionCursor, OperatorId, Pace, SourceDecision, SourceId,
    StoreError, Window, rate_limited,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    Statement,
};

use crate::{
    entity::operator,
    error::db_err,
    read::{broken, stored},
};

/// A page of a source's history in a window, after a cursor: `$1` is the cursor's time
/// (the window's start on the first page) and `$3` its key (-1 then, below every key).
/// The range on `at` is a range of `ix_contact_decisions_at` (migration
/// `m20261206_000008`); the other sources' entries in it are read and passed over.
const SOURCE_DECISIONS: &str = "SELECT id, path, operator_id, record, at FROM contact_decisions \
     WHERE at >= $1 AND at < $2 AND (at > $1 OR id > $3) AND source_id = $4 \
     AND path <> 'unassigned' ORDER BY at, id LIMIT $5";

/// A time as the backend compares it: SQLite keeps times as text, compared as written
/// (`conn::sqlite_timestamp`).
fn time(backend: DbBackend, t: DateTime<Utc>) -> sea_orm::Value {
    match backend {
        DbBackend::Sqlite => crate::conn::sqlite_timestamp(t).into(),
        _ => t.into(),
    }
}

/// See [`crm_core::Store::source_decisions`].
pub async fn source_decisions(
    db: &DatabaseConnection,
    source: SourceId,
    window: Window,
    after: Option<DecisionCursor>,
    limit: u32,
) -> Result<Vec<SourceDecision>, StoreError> {
    let backend = db.get_database_backend();
    let (from, key) = after.map_or((window.since, -1), |c| (c.at, c.key));
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            SOURCE_DECISIONS,
            [
                time(backend, from),
                time(backend, window.until),
                key.into(),
                source.get().into(),
                i64::from(limit).into(),
            ],
        ))
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let path: String = row.try_get_by_index(1).map_err(db_err)?;
            Ok(SourceDecision {
                cursor: DecisionCursor {
                    key: row.try_get_by_index(0).map_err(db_err)?,
                    at: row.try_get_by_index(4).map_err(db_err)?,
                },
                path: path.parse().map_err(|_| broken("decision path"))?,
                operator_id: row
                    .try_get_by_index::<Option<i64>>(2)
                    .map_err(db_err)?
                    .map(OperatorId),
                record: row.try_get_by_index(3).map_err(db_err)?,
            })
        })
        .collect()
}

/// See [`crm_core::Store::candidates`]: one read of the operators named, judged at `now`.
pub async fn candidates(
    db: &DatabaseConnection,
    weights: &[(OperatorId, i64)],
    now: DateTime<Utc>,
) -> Result<Vec<Candidate>, StoreError> {
    let rows: HashMap<i64, operator::Model> = operator::Entity::find()
        .filter(operator::Column::Id.is_in(weights.iter().map(|(id, _)| id.get())))
        .all(db)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    weights
        .iter()
        .enumerate()
        .map(|(index, &(operator_id, weight))| {
            let row = rows
                .get(&operator_id.get())
                .ok_or(StoreError::UnknownOperator {
                    index: Some(index),
                    operator_id,
                })?;
            let pace = row
                .max_assignments_per_minute
                .map(|rate| {
                    stored(AssignmentsPerMinute::new(rate)).map(|per_minute| Pace {
                        per_minute,
                        tat_us: row.pace_tat_us,
                    })
                })
                .transpose()?;
            Ok(Candidate {
                operator_id,
                weight,
                is_active: row.is_active,
                open_contacts: row.open_contacts,
                max_active_contacts: row.max_active_contacts,
                rate_limited: rate_limited(pace, now),
            })
        })
        .collect()
}
