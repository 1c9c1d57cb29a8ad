//! Webhook endpoints and deliveries (migration 13): written through the backend's writer
//! like every change, read from the read pool. The dispatcher that sends them lives in
//! crm-api; here are its units of work: an endpoint's lease over its new events, the
//! outcome of a batch (delivery rows and the cursor, together), the claim of due retries
//! and each retry's outcome.

mod port;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use crm_core::{
    Attempted, Delivery, DeliveryId, DeliveryState, DueDelivery, Entity, EventType, NewWebhook,
    StoreError, Webhook, WebhookId, WebhookLease, WebhookPatch, WebhookSecrets, WebhookUrl,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Statement};

use crate::{
    clock::now,
    conn::{Conn, Row, returned},
    error::{broken, db_err},
};

/// The types as stored: comma-separated, `NULL` for every type.
fn types_column(types: Option<&BTreeSet<EventType>>) -> Option<String> {
    types.map(|t| t.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(","))
}

fn parse_types(stored: Option<String>) -> Result<Option<BTreeSet<EventType>>, StoreError> {
    stored
        .map(|list| {
            list.split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().map_err(|_| broken("event type")))
                .collect()
        })
        .transpose()
}

const INSERT: &str = "INSERT INTO webhooks (url, event_types, enabled, secret, cursor, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

/// Stores an endpoint that starts after event `cursor` (the newest settled one: it
/// receives what comes next).
pub async fn create(
    conn: &impl Conn,
    new: &NewWebhook,
    cursor: u64,
) -> Result<WebhookId, StoreError> {
    let values = vec![
        new.url.as_str().into(),
        types_column(new.event_types.as_ref()).into(),
        new.enabled.into(),
        new.secret.as_str().into(),
        i64::try_from(cursor).unwrap_or(i64::MAX).into(),
        conn.timestamp(now()),
    ];
    let row = returned(conn.one(INSERT, values).await?)?;
    Ok(WebhookId(row.get(0)?))
}

/// `$2` says whether to set the types to `$3`; switching on clears the reason it was off.
const UPDATE: &str = "UPDATE webhooks SET url = COALESCE($1, url), \
     event_types = CASE WHEN $2 THEN $3 ELSE event_types END, \
     enabled = COALESCE($4, enabled), \
     disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END \
     WHERE id = $5 RETURNING id";

/// Changes the given fields.
pub async fn update(
    conn: &impl Conn,
    id: WebhookId,
    patch: &WebhookPatch,
) -> Result<(), StoreError> {
    let values = vec![
        patch.url.as_ref().map(|u| u.as_str().to_owned()).into(),
        patch.event_types.is_some().into(),
        patch
            .event_types
            .as_ref()
            .and_then(|t| types_column(t.as_ref()))
            .into(),
        patch.enabled.into(),
        id.get().into(),
    ];
    conn.one(UPDATE, values)
        .await?
        .map(drop)
        .ok_or(StoreError::NotFound(Entity::Webhook))
}

/// Deletes an endpoint and its deliveries.
pub async fn delete(conn: &impl Conn, id: WebhookId) -> Result<(), StoreError> {
    conn.all(
        "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
        vec![id.get().into()],
    )
    .await?;
    conn.one(
        "DELETE FROM webhooks WHERE id = $1 RETURNING id",
        vec![id.get().into()],
    )
    .await?
    .map(drop)
    .ok_or(StoreError::NotFound(Entity::Webhook))
}

const ROTATE: &str = "UPDATE webhooks SET previous_secret = secret, secret = $1, \
     previous_secret_until = $2 WHERE id = $3 RETURNING id";

/// Makes `secret` the endpoint's secret; the one before still signs until `until`.
pub async fn rotate(
    conn: &impl Conn,
    id: WebhookId,
    secret: &str,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    let values = vec![secret.into(), conn.timestamp(until), id.get().into()];
    conn.one(ROTATE, values)
        .await?
        .map(drop)
        .ok_or(StoreError::NotFound(Entity::Webhook))
}

const COLUMNS: &str = "SELECT id, url, event_types, enabled, disabled_reason, \
     previous_secret_until, created_at FROM webhooks";

fn webhook(row: &QueryResult) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        id: WebhookId(row.try_get_by_index(0).map_err(db_err)?),
        url: WebhookUrl::stored(row.try_get_by_index(1).map_err(db_err)?),
        event_types: parse_types(row.try_get_by_index(2).map_err(db_err)?)?,
        enabled: row.try_get_by_index(3).map_err(db_err)?,
        disabled_reason: row.try_get_by_index(4).map_err(db_err)?,
        previous_secret_until: row.try_get_by_index(5).map_err(db_err)?,
        created_at: row.try_get_by_index(6).map_err(db_err)?,
    })
}

/// Every endpoint, by id.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<Webhook>, StoreError> {
    let statement =
        Statement::from_string(db.get_database_backend(), format!("{COLUMNS} ORDER BY id"));
    let rows = db.query_all_raw(statement).await.map_err(db_err)?;
    rows.iter().map(webhook).collect()
}

/// The endpoint `id`.
pub async fn one(db: &DatabaseConnection, id: WebhookId) -> Result<Webhook, StoreError> {
    let statement = Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("{COLUMNS} WHERE id = $1"),
        [id.get().into()],
    );
    let row = db.query_one_raw(statement).await.map_err(db_err)?;
    row.as_ref()
        .map(webhook)
        .transpose()?
        .ok_or(StoreError::NotFound(Entity::Webhook))
}

const DELIVERY_COLUMNS: &str = "SELECT id, webhook_id, event_seq, state, attempts, \
     next_attempt_at, last_attempt_at, last_status, last_error FROM webhook_deliveries";

fn delivery(row: &QueryResult) -> Result<Delivery, StoreError> {
    let state: String = row.try_get_by_index(3).map_err(db_err)?;
    let seq: i64 = row.try_get_by_index(2).map_err(db_err)?;
    let attempts: i32 = row.try_get_by_index(4).map_err(db_err)?;
    let status: Option<i32> = row.try_get_by_index(7).map_err(db_err)?;
    Ok(Delivery {
        id: DeliveryId(row.try_get_by_index(0).map_err(db_err)?),
        webhook_id: WebhookId(row.try_get_by_index(1).map_err(db_err)?),
        event_seq: seq.unsigned_abs(),
        state: DeliveryState::parse(&state).ok_or_else(|| broken("delivery state"))?,
        attempts: attempts.unsigned_abs(),
        next_attempt_at: row.try_get_by_index(5).map_err(db_err)?,
        last_attempt_at: row.try_get_by_index(6).map_err(db_err)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get_by_index(8).map_err(db_err)?,
    })
}

/// An endpoint's deliveries after `after`, by id, at most `limit`.
pub async fn deliveries(
    db: &DatabaseConnection,
    id: WebhookId,
    after: Option<DeliveryId>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    one(db, id).await?;
    let statement = Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("{DELIVERY_COLUMNS} WHERE webhook_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
        [
            id.get().into(),
            after.map_or(0, DeliveryId::get).into(),
            i64::from(limit).into(),
        ],
    );
    let rows = db.query_all_raw(statement).await.map_err(db_err)?;
    rows.iter().map(delivery).collect()
}

/// The delivery `delivery` of endpoint `id`.
pub async fn one_delivery(
    db: &DatabaseConnection,
    id: WebhookId,
    delivery_id: DeliveryId,
) -> Result<Delivery, StoreError> {
    let statement = Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("{DELIVERY_COLUMNS} WHERE webhook_id = $1 AND id = $2"),
        [id.get().into(), delivery_id.get().into()],
    );
    let row = db.query_one_raw(statement).await.map_err(db_err)?;
    row.as_ref()
        .map(delivery)
        .transpose()?
        .ok_or(StoreError::NotFound(Entity::Delivery))
}

/// Makes a delivery due now, whatever its state (a person asked).
pub async fn retry(
    conn: &impl Conn,
    id: WebhookId,
    delivery_id: DeliveryId,
) -> Result<(), StoreError> {
    let sql = "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, \
               claimed_until = NULL WHERE id = $2 AND webhook_id = $3 RETURNING id";
    let values = vec![
        conn.timestamp(now()),
        delivery_id.get().into(),
        id.get().into(),
    ];
    conn.one(sql, values)
        .await?
        .map(drop)
        .ok_or(StoreError::NotFound(Entity::Delivery))
}

/// The secrets as a row of `(secret, previous secret if still valid)` gives them.
fn secrets(row: &Row, at: usize) -> Result<WebhookSecrets, StoreError> {
    Ok(WebhookSecrets {
        current: row.get(at)?,
        previous: row.get(at + 1)?,
    })
}

/// Takes endpoint `id`'s lease until `until` if no process holds it (`now`), and answers
/// where it stands; `None` when it is off or leased.
const LEASE: &str = "UPDATE webhooks SET lease_until = $1 \
     WHERE id = $2 AND enabled AND (lease_until IS NULL OR lease_until < $3) \
     RETURNING cursor, event_types, url, secret, \
     CASE WHEN previous_secret_until > $3 THEN previous_secret END";

/// See [`LEASE`].
pub async fn lease(
    conn: &impl Conn,
    id: WebhookId,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<WebhookLease>, StoreError> {
    let values = vec![conn.timestamp(until), id.get().into(), conn.timestamp(now)];
    let Some(row) = conn.one(LEASE, values).await? else {
        return Ok(None);
    };
    Ok(Some(WebhookLease {
        webhook_id: id,
        cursor: row.get::<i64>(0)?.unsigned_abs(),
        event_types: parse_types(row.get(1)?)?,
        url: WebhookUrl::stored(row.get(2)?),
        secrets: secrets(&row, 3)?,
    }))
}

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries \
     (webhook_id, event_seq, state, attempts, next_attempt_at, last_attempt_at, last_status, \
     last_error) VALUES ($1, $2, $3, 1, $4, $5, $6, $7)";
/// Only while this process still holds the lease it took (`$4`, its end): a batch that
/// outlived it may have been taken over, and its outcome is then dropped.
const SETTLE: &str = "UPDATE webhooks SET cursor = $1, lease_until = NULL, \
     enabled = CASE WHEN $2 THEN FALSE ELSE enabled END, \
     disabled_reason = CASE WHEN $2 THEN 'gone' ELSE disabled_reason END \
     WHERE id = $3 AND lease_until = $4 RETURNING id";

/// A lease or claim that another process took over meanwhile.
fn lost() -> StoreError {
    StoreError::Unavailable("the lease was taken over by another process".into())
}

fn outcome_values(conn: &impl Conn, a: &Attempted) -> [sea_orm::Value; 5] {
    [
        a.state.as_str().into(),
        conn.timestamp_or_null(a.next_attempt_at),
        conn.timestamp(a.at),
        a.status.map(i32::from).into(),
        a.error.clone().into(),
    ]
}

/// Stores a batch's first attempts and moves the endpoint's cursor past it, releasing its
/// lease (which ends at `lease`); `gone` switches the endpoint off (it answered 410). When
/// the lease was taken over, nothing is stored ([`StoreError::Unavailable`]).
pub async fn settle(
    conn: &impl Conn,
    id: WebhookId,
    lease: DateTime<Utc>,
    cursor: u64,
    attempts: &[Attempted],
    gone: bool,
) -> Result<(), StoreError> {
    for a in attempts {
        let [state, next, at, status, error] = outcome_values(conn, a);
        let seq = i64::try_from(a.event_seq).unwrap_or(i64::MAX);
        let values = vec![id.get().into(), seq.into(), state, next, at, status, error];
        conn.all(INSERT_DELIVERY, values).await?;
    }
    let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
    let values = vec![
        cursor.into(),
        gone.into(),
        id.get().into(),
        conn.timestamp(lease),
    ];
    conn.one(SETTLE, values).await?.map(drop).ok_or_else(lost)
}

const ENDPOINT: &str = "SELECT url, secret, \
     CASE WHEN previous_secret_until > $1 THEN previous_secret END FROM webhooks WHERE id = $2";

/// Claims endpoint `id`'s due deliveries until `until`.
pub async fn claim_due<C: Conn>(
    conn: &C,
    id: WebhookId,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let values = vec![
        conn.timestamp(until),
        conn.timestamp(now),
        id.get().into(),
        i64::from(limit).into(),
    ];
    let rows = conn.all(C::LOCKS.due_deliveries, values).await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let webhook_id = WebhookId(row.get(1)?);
        let endpoint = conn
            .one(ENDPOINT, vec![conn.timestamp(now), webhook_id.get().into()])
            .await?
            .ok_or(StoreError::NotFound(Entity::Webhook))?;
        due.push(DueDelivery {
            id: DeliveryId(row.get(0)?),
            webhook_id,
            event_seq: row.get::<i64>(2)?.unsigned_abs(),
            attempts: row.get::<i32>(3)?.unsigned_abs(),
            url: WebhookUrl::stored(endpoint.get(0)?),
            secrets: secrets(&endpoint, 1)?,
        });
    }
    Ok(due)
}

/// Only while this process still holds its claim (`$7`, its end).
const RECORD: &str = "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2, \
     last_attempt_at = $3, last_status = $4, last_error = $5, claimed_until = NULL \
     WHERE id = $6 AND claimed_until = $7 RETURNING webhook_id";
const GONE: &str =
    "UPDATE webhooks SET enabled = FALSE, disabled_reason = 'gone' WHERE id = $1 RETURNING id";

/// Stores a retry's outcome while this process's claim (ending at `claim`) holds; `gone`
/// switches its endpoint off.
pub async fn record(
    conn: &impl Conn,
    id: DeliveryId,
    claim: DateTime<Utc>,
    attempt: &Attempted,
    gone: bool,
) -> Result<(), StoreError> {
    let [state, next, at, status, error] = outcome_values(conn, attempt);
    let values = vec![
        state,
        next,
        at,
        status,
        error,
        id.get().into(),
        conn.timestamp(claim),
    ];
    let row = conn.one(RECORD, values).await?.ok_or_else(lost)?;
    if gone {
        let webhook: i64 = row.get(0)?;
        conn.one(GONE, vec![webhook.into()]).await?;
    }
    Ok(())
}

/// Each endpoint that is on, with its pending deliveries (through the partial index of due
/// ones) and how many events are after its cursor.
pub const BACKLOG: &str = "SELECT w.id, \
     (SELECT COUNT(*) FROM webhook_deliveries d \
      WHERE d.state = 'pending' AND d.webhook_id = w.id), \
     (SELECT COALESCE(MAX(seq), 0) FROM events) - w.cursor \
     FROM webhooks w WHERE w.enabled ORDER BY w.id";

/// See [`BACKLOG`].
pub async fn backlog(db: &DatabaseConnection) -> Result<Vec<crm_core::WebhookBacklog>, StoreError> {
    let statement = Statement::from_string(db.get_database_backend(), BACKLOG);
    let rows = db.query_all_raw(statement).await.map_err(db_err)?;
    rows.iter()
        .map(|row| {
            Ok(crm_core::WebhookBacklog {
                webhook_id: WebhookId(row.try_get_by_index(0).map_err(db_err)?),
                pending: row.try_get_by_index(1).map_err(db_err)?,
                behind: row.try_get_by_index::<i64>(2).map_err(db_err)?.max(0),
            })
        })
        .collect()
}
