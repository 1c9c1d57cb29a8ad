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

use crate::{
    conn::read_side_time,
    entity::operator,
    error::{broken, db_err},
};

/// How far a contact's `created_at` may run behind or ahead of its id's place in arrival
/// order: ids come from the one database, times from each replica's clock and the moment
/// its registration began. [`contact_ids`] widens a window's id range by this much.
const CLOCK_SLACK: TimeDelta = TimeDelta::minutes(10);

/// The ids of the contacts created in `window`, as the half-open range `lo..hi` of the
/// primary key to read them through: contacts have no index on `created_at` (one more index
/// for every registration to keep), but ids grow with arrival, so each end is a binary
/// search over the key for the first contact created at or after the end, less or more
/// [`CLOCK_SLACK`]. A reader then filters on `created_at` exactly. About 2 log₂(contacts)
/// point reads.
async fn contact_ids(db: &DatabaseConnection, window: Window) -> Result<(i64, i64), StoreError> {
    let backend = db.get_database_backend();
    let bounds = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT MIN(id), MAX(id) FROM contacts",
        ))
        .await
        .map_err(db_err)?;
    let (Some(min), Some(max)) = (match &bounds {
        Some(row) => (
            row.try_get_by_index::<Option<i64>>(0).map_err(db_err)?,
            row.try_get_by_index::<Option<i64>>(1).map_err(db_err)?,
        ),
        None => (None, None),
    }) else {
        return Ok((0, 0));
    };
    let lo = first_created_at_or_after(db, window.since - CLOCK_SLACK, min, max).await?;
    let hi = first_created_at_or_after(db, window.until + CLOCK_SLACK, lo, max).await?;
    Ok((lo, hi))
}

/// The smallest id in `min..=max` whose contact was created at or after `t`, taking
/// `created_at` to grow with the id (see [`contact_ids`]); `max + 1` if none was.
async fn first_created_at_or_after(
    db: &DatabaseConnection,
    t: DateTime<Utc>,
    min: i64,
    max: i64,
) -> Result<i64, StoreError> {
    let backend = db.get_database_backend();
    let (mut lo, mut hi, mut found) = (min, max + 1, max + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let next = db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT id, created_at FROM contacts WHERE id >= $1 ORDER BY id LIMIT 1",
                [mid.into()],
            ))
            .await
            .map_err(db_err)?;
        let next = match next {
            Some(row) => Some((
                row.try_get_by_index::<i64>(0).map_err(db_err)?,
                row.try_get_by_index::<DateTime<Utc>>(1).map_err(db_err)?,
            )),
            None => None,
        };
        match next {
            Some((id, created_at)) if id < hi => {
                if created_at >= t {
                    found = id;
                    hi = mid;
                } else {
                    lo = id + 1;
                }
            }
            // No contact in `mid..hi`.
            _ => hi = mid,
        }
    }
    Ok(found)
}

/// A source's two reads of `window`: `on_contacts` through the primary key's range of
/// the contacts created in it ([`contact_ids`]; `$1..$5` are that range, the window's ends
/// and the source), then `on_decisions` over the later entries of their histories (`$1..$3`
/// are the window's ends and the source).
async fn window_statements(
    db: &DatabaseConnection,
    source: SourceId,
    window: Window,
    on_contacts: &str,
    on_decisions: &str,
) -> Result<[Statement; 2], StoreError> {
    let backend = db.get_database_backend();
    let (lo, hi) = contact_ids(db, window).await?;
    let since = read_side_time(backend, window.since);
    let until = read_side_time(backend, window.until);
    let source = sea_orm::Value::from(source.get());
    Ok([
        Statement::from_sql_and_values(
            backend,
            on_contacts,
            [
                lo.into(),
                hi.into(),
                since.clone(),
                until.clone(),
                source.clone(),
            ],
        ),
        Statement::from_sql_and_values(backend, on_decisions, [since, until, source]),
    ])
}

/// A source's registrations in a window (the first entry of each contact's history, on
/// its row, whose path its registered operator gives, as `DecisionPath::of_registration`
/// does): a range of the primary key ([`contact_ids`]).
const SOURCE_REGISTRATIONS: &str = "SELECT \
     CASE WHEN registered_operator_id IS NULL THEN 'queued' ELSE 'registered' END, \
     registered_operator_id, decision, created_at \
     FROM contacts WHERE id >= $1 AND id < $2 AND created_at >= $3 AND created_at < $4 \
     AND source_id = $5 ORDER BY id";

/// A source's later entries in a window, in time order: a range of
/// `ix_contact_decisions_at` (migration `m20261206_000008`). On SQLite the index's entries
/// are `(at, rowid)` and the rowid is `id`, so the rows come in the index's order with no
/// sort; PostgreSQL sorts the entries of one instant by `id`. The other sources' entries in
/// the range are read and passed over, so a report costs in proportion to the window's
/// entries. Read as one stream (no pages: a page after a cursor of `(at, id)` cannot seek
/// past a run of equal times through this index).
const SOURCE_DECISIONS: &str = "SELECT path, operator_id, record, at FROM contact_decisions \
     WHERE at >= $1 AND at < $2 AND source_id = $3 AND path <> 'unassigned' ORDER BY at, id";

/// See [`crm_core::Store::source_decisions`].
pub async fn source_decisions(
    db: &DatabaseConnection,
    source: SourceId,
    window: Window,
    sink: &mut (dyn FnMut(SourceDecision) + Send),
) -> Result<u64, StoreError> {
    let mut read = 0;
    // Both give `(path, operator_id, record, at)`.
    let statements =
        window_statements(db, source, window, SOURCE_REGISTRATIONS, SOURCE_DECISIONS).await?;
    for statement in statements {
        let mut rows = db.stream_raw(statement).await.map_err(db_err)?;
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
    }
    Ok(read)
}

/// A source's registrations per chosen operator in a window, through the primary key's
/// range ([`contact_ids`]), reading no record.
const SOURCE_REGISTERED: &str = "SELECT registered_operator_id, COUNT(*) FROM contacts \
     WHERE id >= $1 AND id < $2 AND created_at >= $3 AND created_at < $4 AND source_id = $5 \
     AND registered_operator_id IS NOT NULL GROUP BY registered_operator_id";

/// A source's drains per operator in a window, through `ix_contact_decisions_at`.
const SOURCE_DRAINED: &str = "SELECT operator_id, COUNT(*) FROM contact_decisions \
     WHERE at >= $1 AND at < $2 AND source_id = $3 AND operator_id IS NOT NULL \
     AND path = 'drained' GROUP BY operator_id";

/// See [`crm_core::Store::source_assignments`].
pub async fn source_assignments(
    db: &DatabaseConnection,
    source: SourceId,
    window: Window,
) -> Result<Vec<(OperatorId, u64)>, StoreError> {
    let mut counts: HashMap<i64, u64> = HashMap::new();
    let statements =
        window_statements(db, source, window, SOURCE_REGISTERED, SOURCE_DRAINED).await?;
    for statement in statements {
        for row in db.query_all_raw(statement).await.map_err(db_err)? {
            let count: i64 = row.try_get_by_index(1).map_err(db_err)?;
            *counts
                .entry(row.try_get_by_index(0).map_err(db_err)?)
                .or_default() += u64::try_from(count).unwrap_or(0);
        }
    }
    let mut counts: Vec<_> = counts
        .into_iter()
        .map(|(id, count)| (OperatorId(id), count))
        .collect();
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

/// Registrations per chosen operator in the hour and the day before `$5` (`$3` and `$4`
/// are the hour's and the day's start), through the primary key's range `$1..$2`
/// ([`contact_ids`]).
const RECENT_REGISTERED: &str = "SELECT registered_operator_id, \
     SUM(CASE WHEN created_at >= $3 THEN 1 ELSE 0 END), COUNT(*) FROM contacts \
     WHERE id >= $1 AND id < $2 AND created_at >= $4 AND created_at <= $5 \
     AND registered_operator_id IS NOT NULL GROUP BY registered_operator_id";

/// Later assignments (drains and by hand) per operator in the hour and the day before `$3`
/// (`$1` and `$2` are the hour's and the day's start), through `ix_contact_decisions_at`.
const RECENT_ASSIGNMENTS: &str = "SELECT operator_id, SUM(CASE WHEN at >= $1 THEN 1 ELSE 0 END), \
     COUNT(*) FROM contact_decisions WHERE at >= $2 AND at <= $3 AND operator_id IS NOT NULL \
     AND (path = 'drained' OR path = 'manual') GROUP BY operator_id";

/// `(last hour, last day)` assignments per operator id, before `now`.
pub async fn recent_assignments(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
    let backend = db.get_database_backend();
    let day = Window {
        since: now - TimeDelta::hours(24),
        until: now,
    };
    let (lo, hi) = contact_ids(db, day).await?;
    let hour = read_side_time(backend, now - TimeDelta::hours(1));
    let since = read_side_time(backend, day.since);
    let now = read_side_time(backend, now);
    let mut counts: HashMap<i64, (i64, i64)> = HashMap::new();
    for statement in [
        Statement::from_sql_and_values(
            backend,
            RECENT_REGISTERED,
            [
                lo.into(),
                hi.into(),
                hour.clone(),
                since.clone(),
                now.clone(),
            ],
        ),
        Statement::from_sql_and_values(backend, RECENT_ASSIGNMENTS, [hour, since, now]),
    ] {
        for row in db.query_all_raw(statement).await.map_err(db_err)? {
            let entry = counts
                .entry(row.try_get_by_index(0).map_err(db_err)?)
                .or_default();
            entry.0 += row.try_get_by_index::<i64>(1).map_err(db_err)?;
            entry.1 += row.try_get_by_index::<i64>(2).map_err(db_err)?;
        }
    }
    Ok(counts)
}

/// The records of the contacts waiting now that were queued when registered (the first
/// entry of a history, on the contact's row), through the queue's index.
const WAITING_RECORDS: &str = "SELECT decision FROM contacts \
     WHERE operator_id IS NULL AND status = 'open' AND registered_operator_id IS NULL";

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
