//! The outbox: the statement that stores an event in the unit of work whose change it
//! reports (called by `ops`, the drain and each backend's registration), the reads that
//! give events back in order, and retention.

use chrono::{DateTime, Utc};
use crm_core::{
    ContactId, ContactState, ContactStatus, Decision, DecisionPath, Event, EventCursor, EventPage,
    EventType, NewEvent, OperatorId, SourceId, StoreError,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement};

use crate::{conn::Conn, error::db_err};

/// The `contact.created` event of a registration that stored its contact with `operator`
/// (or waiting) by `decision`; the statement that inserts the event fills in the id.
pub fn created(source: SourceId, operator: Option<OperatorId>, decision: &Decision) -> NewEvent {
    let path = if operator.is_some() {
        DecisionPath::Registered
    } else {
        DecisionPath::Queued
    };
    let state = ContactState {
        source_id: source,
        operator_id: operator,
        status: ContactStatus::Open,
        decision: Some((path, decision.summary(path))),
    };
    NewEvent::contact(EventType::ContactCreated, None, &state)
}

/// Stores `event` in the unit of work, at [`crate::clock::now`].
pub async fn append_event(conn: &impl Conn, event: &NewEvent) -> Result<(), StoreError> {
    append_event_at(conn, event, crate::clock::now()).await
}

/// Stores `event` in the unit of work, at `at`.
pub async fn append_event_at(
    conn: &impl Conn,
    event: &NewEvent,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let values = vec![
        event.kind.as_str().into(),
        conn.timestamp(at),
        event.contact_id.map(ContactId::get).into(),
        event.data.clone().into(),
    ];
    conn.one(crate::sql::INSERT_EVENT, values).await?;
    conn.inserted_event(event, at);
    Ok(())
}

/// The retention mark, then the events after `$1` (up to `$2`), at most `$3`: one
/// statement, so the mark and the rows are of one snapshot. PostgreSQL adds that
/// snapshot's `xmin` ([`EventCursor`]).
macro_rules! page_sql {
    ($snapshot:literal) => {
        concat!(
            "SELECT l.pruned_through, e.seq, e.type, e.at, e.contact_id, e.data",
            $snapshot,
            " FROM event_log l LEFT JOIN (SELECT seq, type, at, contact_id, data FROM events \
             WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3) e ON TRUE \
             WHERE l.id = 1 ORDER BY e.seq"
        )
    };
}

const PAGE: &str = page_sql!("");
const PAGE_WITH_SNAPSHOT: &str =
    page_sql!(", pg_snapshot_xmin(pg_current_snapshot())::text::bigint");
/// A transaction id assigned now, in a transaction (this statement) that ends at once: a
/// bound above every id assigned before ([`EventCursor::bound_gap`]).
const FRESH_XID: &str = "SELECT pg_current_xact_id()::text::bigint";
/// The `xmin` of a snapshot taken now.
const XMIN: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

async fn page(
    db: &DatabaseConnection,
    after: u64,
    upto: u64,
    limit: u32,
    snapshot: bool,
) -> Result<(EventPage, Option<u64>), StoreError> {
    let backend = db.get_database_backend();
    let sql = if snapshot { PAGE_WITH_SNAPSHOT } else { PAGE };
    let values = [
        i64::try_from(after).unwrap_or(i64::MAX).into(),
        i64::try_from(upto).unwrap_or(i64::MAX).into(),
        i64::from(limit).into(),
    ];
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(db_err)?;
    let mut page = EventPage::default();
    let mut seen_xmin = None;
    for row in &rows {
        page.pruned_through = get::<i64>(row, 0)?.unsigned_abs();
        let Some(seq) = get::<Option<i64>>(row, 1)? else {
            continue;
        };
        let kind: String = get(row, 2)?;
        let kind = kind
            .parse::<EventType>()
            .map_err(|err| StoreError::Internal(Box::new(err)))?;
        let contact = get::<Option<i64>>(row, 4)?.map(ContactId);
        let data: String = get(row, 5)?;
        page.events.push(Event::from_stored(
            seq.unsigned_abs(),
            kind,
            get(row, 3)?,
            contact,
            &data,
        ));
        if snapshot {
            seen_xmin = Some(get::<i64>(row, 6)?.unsigned_abs());
        }
    }
    Ok((page, seen_xmin))
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, index: usize) -> Result<T, StoreError> {
    row.try_get_by_index(index).map_err(db_err)
}

/// The events after `cursor` that may be delivered now, at most `limit`, in order, and the
/// cursor moved past them (on PostgreSQL, up to the first gap that may still be filled).
/// A cursor below the retention mark is moved to it: the page's mark tells the caller.
pub async fn read(
    db: &DatabaseConnection,
    mut cursor: EventCursor,
    limit: u32,
) -> Result<(EventCursor, EventPage), StoreError> {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let (mut page, xmin) = page(db, cursor.after, u64::MAX, limit, postgres).await?;
    if page.pruned_through > cursor.after {
        cursor = EventCursor::at(page.pruned_through);
        page.events.retain(|e| e.seq > cursor.after);
    }
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    let deliver = cursor.advance(&seqs, xmin.filter(|_| postgres));
    if cursor.needs_bound() {
        cursor.bound_gap(scalar(db, FRESH_XID).await?);
    }
    page.events.truncate(deliver);
    Ok((cursor, page))
}

/// The events with `after < seq <= upto`, at most `limit`, in order: numbers a reader
/// ([`read`]) has passed already, so no gap among them can still be filled.
pub async fn between(
    db: &DatabaseConnection,
    after: u64,
    upto: u64,
    limit: u32,
) -> Result<EventPage, StoreError> {
    page(db, after, upto, limit, false)
        .await
        .map(|(page, _)| page)
}

/// The newest event, and a transaction id assigned after the snapshot that read it.
const HEAD: &str = "SELECT COALESCE(MAX(seq), 0), pg_current_xact_id()::text::bigint FROM events";
const HEAD_SQLITE: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";
/// How long [`settled_head`] waits for the transactions before it to end.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn row(db: &DatabaseConnection, sql: &str) -> Result<QueryResult, StoreError> {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Internal("a statement returned no row".into()))
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Result<u64, StoreError> {
    Ok(get::<i64>(&row(db, sql).await?, 0)?.unsigned_abs())
}

/// The newest event's number `n`, once no event up to `n` can still commit: on SQLite at
/// once (one writer commits in order); on PostgreSQL once every transaction that had its
/// id when `n` was read has ended (see [`EventCursor`]), usually milliseconds.
///
/// # Errors
/// [`StoreError::Unavailable`] when a transaction holds that back for longer than five
/// seconds (a long-running writing transaction anywhere on the PostgreSQL cluster).
pub async fn settled_head(db: &DatabaseConnection) -> Result<u64, StoreError> {
    if db.get_database_backend() != DbBackend::Postgres {
        return scalar(db, HEAD_SQLITE).await;
    }
    let first = row(db, HEAD).await?;
    let head = get::<i64>(&first, 0)?.unsigned_abs();
    let bound = get::<i64>(&first, 1)?.unsigned_abs();
    let started = std::time::Instant::now();
    while scalar(db, XMIN).await? < bound {
        if started.elapsed() > SETTLE_WAIT {
            return Err(StoreError::Unavailable(
                "a long-running transaction holds the newest events back".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    Ok(head)
}

const LOCK_LOG: &str = "UPDATE event_log SET pruned_through = pruned_through WHERE id = 1 \
     RETURNING pruned_through";
const NEWEST: &str = "SELECT MAX(seq) FROM events";
/// The oldest `$2` events, each with whether it was written before `$1`.
const OLDEST: &str = "SELECT seq, at < $1 FROM events ORDER BY seq LIMIT $2";
const DELETE_THROUGH: &str = "DELETE FROM events WHERE seq <= $1";
const DELETE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE event_seq <= $1";
/// The oldest event an endpoint that is on still needs: one with a delivery due, or the
/// first after its cursor. (An endpoint that is off holds nothing back: switched on after
/// longer than retention, it misses what was pruned meanwhile.)
pub const WEBHOOK_FLOOR: &str = "SELECT MIN(seq) FROM (\
     SELECT MIN(d.event_seq) AS seq FROM webhook_deliveries d \
     JOIN webhooks w ON w.id = d.webhook_id WHERE d.state = 'pending' AND w.enabled \
     UNION ALL SELECT MIN(cursor) + 1 FROM webhooks WHERE enabled) f";
const MARK: &str = "UPDATE event_log SET pruned_through = $1 WHERE id = 1 RETURNING id";

/// Deletes, of the oldest `batch` events, those written before `before` that are not among
/// the newest `keep` and that no webhook endpoint still needs, with their deliveries, and
/// moves the retention mark past them; returns how many. The mark's
/// row is locked first, so replicas prune one at a time.
pub async fn prune(
    conn: &impl Conn,
    before: DateTime<Utc>,
    keep: u64,
    batch: u32,
) -> Result<u64, StoreError> {
    let marked = crate::conn::returned(conn.one(LOCK_LOG, vec![]).await?)?;
    let marked = marked.get::<i64>(0)?.unsigned_abs();
    let Some(newest) = conn.one(NEWEST, vec![]).await? else {
        return Ok(0);
    };
    let Some(newest) = newest.get::<Option<i64>>(0)?.map(i64::unsigned_abs) else {
        return Ok(0);
    };
    // The newest event always stays: SQLite's next number follows the largest one left.
    let mut keep_from = newest.saturating_sub(keep.max(1));
    let floor = conn.one(WEBHOOK_FLOOR, vec![]).await?;
    if let Some(floor) = floor
        .map(|row| row.get::<Option<i64>>(0))
        .transpose()?
        .flatten()
    {
        keep_from = keep_from.min(floor.unsigned_abs().saturating_sub(1));
    }
    let mut through = marked;
    let mut count = 0;
    let values = vec![conn.timestamp(before), i64::from(batch).into()];
    for row in conn.all(OLDEST, values).await? {
        let seq = row.get::<i64>(0)?.unsigned_abs();
        if seq > keep_from || !row.get::<bool>(1)? {
            break;
        }
        through = seq;
        count += 1;
    }
    if through == marked {
        return Ok(0);
    }
    let through = i64::try_from(through).unwrap_or(i64::MAX);
    conn.all(DELETE_DELIVERIES, vec![through.into()]).await?;
    conn.all(DELETE_THROUGH, vec![through.into()]).await?;
    conn.one(MARK, vec![through.into()]).await?;
    conn.pruned_events(through.unsigned_abs());
    Ok(count)
}
