//! Idempotency keys over [`Conn`]: claiming a key for a registration, recording the
//! answer it got (a snapshot of the contact), replaying it, and forgetting keys past their
//! lifetime. Each runs inside the registration's unit of work (see `ops`).

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactId, ContactStatus, IdempotencyKey, KeyClaim, LeadId, OperatorId,
    OperatorSummary, Payload, SourceId, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::{
    clock::now,
    conn::{Conn, Row, returned},
    sql,
};

/// Forgets idempotency keys older than their lifetime; returns how many.
pub async fn expire_keys(conn: &impl Conn) -> Result<usize, StoreError> {
    let oldest = now() - IdempotencyKey::LIFETIME;
    Ok(conn
        .all(sql::EXPIRE_KEYS, vec![conn.timestamp(oldest)])
        .await?
        .len())
}

/// A contact as first answered, kept with its idempotency key so a replay returns the
/// same body even after the contact was closed or reassigned.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    id: i64,
    lead_id: i64,
    source_id: i64,
    operator: Option<(i64, String, bool)>,
    payload: String,
    created_at: DateTime<Utc>,
    /// Left out when the answer had none (and in snapshots written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waiting_ahead: Option<u64>,
}

impl From<&Contact> for Snapshot {
    fn from(c: &Contact) -> Self {
        Self {
            id: c.id.get(),
            lead_id: c.lead_id.get(),
            source_id: c.source_id.get(),
            operator: c
                .operator
                .as_ref()
                .map(|o| (o.id.get(), o.name.clone(), o.is_active)),
            payload: c.payload.as_json().to_owned(),
            created_at: c.created_at,
            waiting_ahead: c.waiting_ahead,
        }
    }
}

impl From<Snapshot> for Contact {
    fn from(s: Snapshot) -> Self {
        Self {
            id: ContactId(s.id),
            lead_id: LeadId(s.lead_id),
            source_id: SourceId(s.source_id),
            operator: s.operator.map(|(id, name, is_active)| OperatorSummary {
                id: OperatorId(id),
                name,
                is_active,
            }),
            status: ContactStatus::Open,
            payload: Payload::from_stored(s.payload),
            created_at: s.created_at,
            closed_at: None,
            waiting_ahead: s.waiting_ahead,
        }
    }
}

/// Takes an idempotency key for a registration at `now` (see
/// [`crm_core::KeyedRegistrationTx::claim_key`]) where other units of work run at the same time
/// (PostgreSQL): the key is inserted here, which makes a concurrent request with the same
/// key wait for this one.
pub async fn claim_key(
    conn: &impl Conn,
    key: &IdempotencyKey,
    now: DateTime<Utc>,
) -> Result<KeyClaim, StoreError> {
    let identity = || vec![key.credential().into(), key.key().into()];
    let mut values = identity();
    let oldest = conn.timestamp(now - IdempotencyKey::LIFETIME);
    values.extend([key.fingerprint().into(), conn.timestamp(now), oldest]);
    if conn.one(sql::CLAIM_KEY, values).await?.is_some() {
        return Ok(KeyClaim::Claimed);
    }
    let row = conn
        .one(sql::READ_KEY, identity())
        .await?
        .ok_or_else(|| StoreError::Internal("a live idempotency key vanished".into()))?;
    replay(key, &row)
}

/// [`claim_key`] for the SQLite writer, which runs one unit of work at a time, so nobody
/// can race for the key: it only reads here and writes the key in [`store_key`], so a
/// registration that fails after the claim (an unknown source) has written nothing.
pub async fn read_live_key(
    conn: &impl Conn,
    key: &IdempotencyKey,
    now: DateTime<Utc>,
) -> Result<KeyClaim, StoreError> {
    let oldest = conn.timestamp(now - IdempotencyKey::LIFETIME);
    let values = vec![key.credential().into(), key.key().into(), oldest];
    match conn.one(sql::READ_LIVE_KEY, values).await? {
        Some(row) => replay(key, &row),
        None => Ok(KeyClaim::Claimed),
    }
}

/// What a live key's row says: the same request again (replay its answer) or another.
fn replay(key: &IdempotencyKey, row: &Row) -> Result<KeyClaim, StoreError> {
    let fingerprint: String = row.get(0)?;
    if fingerprint != key.fingerprint() {
        return Ok(KeyClaim::Reused);
    }
    let snapshot: Option<String> = row.get(1)?;
    let snapshot = snapshot
        .ok_or_else(|| StoreError::Internal("a committed idempotency key has no answer".into()))?;
    let snapshot: Snapshot =
        serde_json::from_str(&snapshot).map_err(|err| StoreError::Internal(Box::new(err)))?;
    Ok(KeyClaim::Replay(snapshot.into()))
}

/// Keeps a registration's answer with the key [`claim_key`] took (see
/// [`crm_core::KeyedRegistrationTx::record_key`]).
pub async fn record_key(
    conn: &impl Conn,
    key: &IdempotencyKey,
    contact: &Contact,
) -> Result<(), StoreError> {
    let values = vec![
        snapshot(contact)?.into(),
        key.credential().into(),
        key.key().into(),
    ];
    returned(conn.one(sql::RECORD_KEY, values).await?).map(drop)
}

/// Writes the key [`read_live_key`] found free at `now`, with its answer: inserts it, or
/// takes over the expired row.
pub async fn store_key(
    conn: &impl Conn,
    key: &IdempotencyKey,
    contact: &Contact,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let values = vec![
        key.credential().into(),
        key.key().into(),
        snapshot(contact)?.into(),
        key.fingerprint().into(),
        conn.timestamp(now),
    ];
    conn.all(sql::STORE_KEY, values).await?;
    Ok(())
}

fn snapshot(contact: &Contact) -> Result<String, StoreError> {
    serde_json::to_string(&Snapshot::from(contact))
        .map_err(|err| StoreError::Internal(Box::new(err)))
}
