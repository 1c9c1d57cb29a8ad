//! The read side of the reports (`crm_core::source_distribution`, `crm_core::simulate`):
//! a source's history over a window of time, and operators as the rule would see them.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use crm_core::{
    Candidate, Decision, Exclusion, OperatorId, SourceDecision, SourceId, StoreError, Window,
    rate_limited,
};
use futures_util::TryStreamExt;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, Statement,
    StreamTrait,
};

use crate::{conn::read_side_time, entity::operator, error::db_err, read::broken};

/// A source's history in a window, in time order: a range of `ix_contact_decisions_at`
/// (migration `m20261206_000008`). On SQLite the index's entries are `(at, rowid)` and the
/// rowid is `id`, so the rows come in the index's order with no sort; PostgreSQL sorts the
/// entries of one instant by `id`. The other sources' entries in the range
/// are read and passed over, so a report costs in proportion to the window's entries.
/// Read as one stream (no pages: a page after a cursor of `(at, id)` cannot seek past a
/// run of equal times through this index, and a preload of a million entries of one
/// instant made each page re-read the run from its start).
const SOURCE_DECISIONS: &str = "SELECT path, operator_id, record, at FROM contact_decisions \
     WHERE at >= $1 AND at < $2 AND source_id = $3 AND path <> 'unassigned' ORDER BY at, id";

/// See [`crm_core::Store::source_decisions`].
pub async fn source_decisions(
    db: &DatabaseConnection,
    source: SourceId,
    window: Window,
    sink: &mut (dyn FnMut(SourceDecision) + Send),
) -> Result<u64, StoreError> {
    let backend = db.get_database_backend();
    let mut rows = db
        .stream_raw(Statement::from_sql_and_values(
            backend,
            SOURCE_DECISIONS,
            [
                read_side_time(backend, window.since),
                read_side_time(backend, window.until),
                source.get().into(),
            ],
        ))
        .await
        .map_err(db_err)?;
    let mut read = 0;
    while let Some(row) = rows.try_next().await.map_err(db_err)? {
        let path: String = row.try_get_by_index(0).map_err(db_err)?;
        sink(SourceDecision {
            path: path.parse().map_err(|_| broken("decision path"))?,
            operator_id: row
                .try_get_by_index::<Option<i64>>(1)
                .map_err(db_err)?
                .map(OperatorId),
            record: row.try_get_by_index(2).map_err(db_err)?,
            at: row.try_get_by_index(3).map_err(db_err)?,
        });
        read += 1;
    }
    Ok(read)
}

/// A source's automatic assignments per operator in a window, counted through
/// `ix_contact_decisions_at` without reading a record.
const SOURCE_ASSIGNMENTS: &str = "SELECT operator_id, COUNT(*) FROM contact_decisions \
     WHERE at >= $1 AND at < $2 AND source_id = $3 AND operator_id IS NOT NULL \
     AND (path = 'registered' OR path = 'drained') GROUP BY operator_id";

/// See [`crm_core::Store::source_assignments`].
pub async fn source_assignments(
    db: &DatabaseConnection,
    source: SourceId,
    window: Window,
) -> Result<Vec<(OperatorId, u64)>, StoreError> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            SOURCE_ASSIGNMENTS,
            [
                read_side_time(backend, window.since),
                read_side_time(backend, window.until),
                source.get().into(),
            ],
        ))
        .await
        .map_err(db_err)?;
    let mut counts = rows
        .iter()
        .map(|row| {
            let count: i64 = row.try_get_by_index(1).map_err(db_err)?;
            Ok((
                OperatorId(row.try_get_by_index(0).map_err(db_err)?),
                u64::try_from(count).unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    counts.sort_unstable();
    Ok(counts)
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
            let pace = crate::sql::stored_pace(row.max_assignments_per_minute, row.pace_tat_us)?;
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

/// Assignments per operator in the hour and the day before `$3` (`$1` and `$2` are the
/// hour's and the day's start): the automatic ones and those by hand, over the day's
/// entries, read through `ix_contact_decisions_at`.
const RECENT_ASSIGNMENTS: &str = "SELECT operator_id, SUM(CASE WHEN at >= $1 THEN 1 ELSE 0 END), \
     COUNT(*) FROM contact_decisions WHERE at >= $2 AND at <= $3 AND operator_id IS NOT NULL \
     AND (path = 'registered' OR path = 'drained' OR path = 'manual') GROUP BY operator_id";

/// `(last hour, last day)` assignments per operator id, before `now`.
pub async fn recent_assignments(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            RECENT_ASSIGNMENTS,
            [
                read_side_time(backend, now - TimeDelta::hours(1)),
                read_side_time(backend, now - TimeDelta::hours(24)),
                read_side_time(backend, now),
            ],
        ))
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get_by_index(0).map_err(db_err)?,
                (
                    row.try_get_by_index(1).map_err(db_err)?,
                    row.try_get_by_index(2).map_err(db_err)?,
                ),
            ))
        })
        .collect()
}

/// The `queued` records of the contacts waiting now: each waiting contact through the
/// queue's index, its history as a range of the history's key.
const WAITING_RECORDS: &str = "SELECT d.record FROM contacts c JOIN contact_decisions d \
     ON d.id BETWEEN c.id * 65536 AND c.id * 65536 + 65535 AND d.contact_id = c.id \
     WHERE c.operator_id IS NULL AND c.status = 'open' AND d.path = 'queued'";

/// Per operator id, how many contacts waiting now were queued while it was at capacity:
/// costs in proportion to the queue.
pub async fn waiting_for_capacity(
    db: &DatabaseConnection,
) -> Result<HashMap<i64, i64>, StoreError> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            WAITING_RECORDS,
        ))
        .await
        .map_err(db_err)?;
    let mut counts = HashMap::new();
    for row in rows {
        let record: Option<String> = row.try_get_by_index(0).map_err(db_err)?;
        let Some(decision) = record.as_deref().and_then(Decision::from_record) else {
            continue;
        };
        for verdict in decision.candidates {
            if verdict.excluded == Some(Exclusion::AtCapacity) {
                *counts
                    .entry(verdict.candidate.operator_id.get())
                    .or_default() += 1;
            }
        }
    }
    Ok(counts)
}
