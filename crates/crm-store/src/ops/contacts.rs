//! The writes of contacts other than their registration: close, assignment and
//! unassignment by hand, and the decision history's later entries, each with its event.

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactId, ContactState, ContactStatus, Decision, DecisionEntry, DecisionPath, Entity,
    EventType, LeadId, NewEvent, OperatorId, OperatorSummary, Payload, SourceId, StoreError,
};

use crate::{
    clock::now,
    conn::{Conn, returned},
    events::{append_event, append_event_at},
    sql,
};

/// What a close did.
#[derive(Debug)]
pub enum Closed {
    /// The contact was open: it is closed now, as it is answered (its operator, if it had
    /// one, released).
    Now(Contact),
    /// It was closed already; nothing was written.
    Already,
}

impl Closed {
    /// The operator whose place the close freed.
    pub fn released(&self) -> Option<OperatorId> {
        match self {
            Self::Now(contact) => contact.operator.as_ref().map(|operator| operator.id),
            Self::Already => None,
        }
    }
}

/// Closes an open contact and releases its operator; a closed one stays as it is.
pub async fn close_contact(conn: &impl Conn, id: ContactId) -> Result<Closed, StoreError> {
    let at = now();
    let closed = conn
        .one(
            sql::CLOSE_CONTACT,
            vec![conn.timestamp(at), id.get().into()],
        )
        .await?;
    let Some(row) = closed else {
        return match conn.one(sql::CONTACT_STATE, vec![id.get().into()]).await? {
            Some(_) => Ok(Closed::Already),
            None => Err(StoreError::NotFound(Entity::Contact)),
        };
    };
    let operator = match row.get::<Option<i64>>(0)? {
        Some(operator_id) => Some(release(conn, operator_id).await?),
        None => None,
    };
    let contact = Contact {
        id,
        lead_id: LeadId(row.get(2)?),
        source_id: SourceId(row.get(1)?),
        operator,
        status: ContactStatus::Closed,
        payload: Payload::from_stored(row.get(3)?),
        created_at: row.time(4)?,
        closed_at: Some(at),
        waiting_ahead: None,
    };
    let state = ContactState {
        source_id: contact.source_id,
        operator_id: contact.operator.as_ref().map(|operator| operator.id),
        status: ContactStatus::Closed,
        decision: None,
    };
    let event = NewEvent::contact(EventType::ContactClosed, Some(id), &state);
    append_event(conn, &event).await?;
    Ok(Closed::Now(contact))
}

/// Releases a place of `operator_id`; returns the operator as a contact shows it.
async fn release(conn: &impl Conn, operator_id: i64) -> Result<OperatorSummary, StoreError> {
    let row = conn
        .one(sql::RELEASE_OPERATOR, vec![operator_id.into()])
        .await?
        .ok_or_else(|| StoreError::Internal("an operator's counter would go below zero".into()))?;
    Ok(OperatorSummary {
        id: OperatorId(operator_id),
        name: row.get(0)?,
        is_active: row.get(1)?,
    })
}

/// Locks contact `id` (see `LOCKS.contact`) and returns its operator id and source.
///
/// # Errors
/// [`StoreError::NotFound`] when it does not exist, [`StoreError::ContactClosed`] when it is
/// closed.
async fn lock_open_contact<C: Conn>(
    conn: &C,
    id: ContactId,
) -> Result<(Option<i64>, SourceId), StoreError> {
    let contact = conn
        .one(C::LOCKS.contact, vec![id.get().into()])
        .await?
        .ok_or(StoreError::NotFound(Entity::Contact))?;
    let status: String = contact.get(0)?;
    if status != ContactStatus::Open.as_str() {
        return Err(StoreError::ContactClosed);
    }
    Ok((contact.get(1)?, SourceId(contact.get(2)?)))
}

/// Assigns an open contact to an operator by hand, moving the load from its previous
/// operator.
pub async fn assign_contact<C: Conn>(
    conn: &C,
    id: ContactId,
    operator_id: OperatorId,
) -> Result<(), StoreError> {
    let (current, source) = lock_open_contact(conn, id).await?;
    let operator = conn
        .one(sql::OPERATOR_LOAD, vec![operator_id.get().into()])
        .await?
        .ok_or(StoreError::UnknownOperator {
            index: None,
            operator_id,
        })?;
    if current == Some(operator_id.get()) {
        return Ok(());
    }
    if !operator.get::<bool>(0)? {
        return Err(StoreError::OperatorInactive);
    }
    // Refused before anything is written. Exact on SQLite; on PostgreSQL the row is not
    // locked yet, so the claim below still decides.
    if operator.get::<i64>(1)? >= operator.get::<i64>(2)? {
        return Err(StoreError::OperatorAtCapacity);
    }
    // Operator rows are locked in ascending id order; a failed claim rolls the whole
    // unit of work back, so releasing first is safe.
    if let Some(previous) = current.filter(|&p| p < operator_id.get()) {
        release(conn, previous).await?;
    }
    if conn
        .one(sql::CLAIM_OPERATOR, vec![operator_id.get().into()])
        .await?
        .is_none()
    {
        return Err(StoreError::OperatorAtCapacity);
    }
    if let Some(previous) = current.filter(|&p| p > operator_id.get()) {
        release(conn, previous).await?;
    }
    conn.one(
        sql::SET_CONTACT_OPERATOR,
        vec![operator_id.get().into(), id.get().into()],
    )
    .await?;
    let entry = (DecisionPath::Manual, Some(operator_id), None);
    append_decision(conn, id, source, entry, now()).await
}

/// Takes an open contact from its operator by hand and puts it back in the queue, at its
/// place (the queue is in id order), releasing the operator's counter; returns the
/// operator it was taken from and its source, or `None` when it was waiting already.
pub async fn unassign_contact<C: Conn>(
    conn: &C,
    id: ContactId,
) -> Result<Option<(OperatorId, SourceId)>, StoreError> {
    let (current, source) = lock_open_contact(conn, id).await?;
    let Some(from) = current else {
        return Ok(None);
    };
    returned(
        conn.one(
            sql::SET_CONTACT_OPERATOR,
            vec![None::<i64>.into(), id.get().into()],
        )
        .await?,
    )?;
    release(conn, from).await?;
    let from = OperatorId(from);
    let entry = (DecisionPath::Unassigned, Some(from), None);
    append_decision(conn, id, source, entry, now()).await?;
    Ok(Some((from, source)))
}

/// Appends `(path, operator, decision)` to contact `id`'s decision history, at `at`, with the
/// event that reports it (`contact.assigned` or `contact.unassigned`).
pub async fn append_decision(
    conn: &impl Conn,
    id: ContactId,
    source: SourceId,
    (path, operator, decision): (DecisionPath, Option<OperatorId>, Option<&Decision>),
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    // The event's summary from the decision in hand, not from its record read back.
    let summary = match decision {
        Some(decision) => decision.summary(path),
        None => DecisionEntry {
            seq: 0,
            path,
            at,
            operator_id: operator,
            record: None,
        }
        .summary(),
    };
    let (kind, now_with) = match path {
        DecisionPath::Unassigned => (EventType::ContactUnassigned, None),
        DecisionPath::Registered | DecisionPath::Queued => (EventType::ContactCreated, operator),
        DecisionPath::Drained | DecisionPath::Manual => (EventType::ContactAssigned, operator),
    };
    let state = ContactState {
        source_id: source,
        operator_id: now_with,
        status: ContactStatus::Open,
        decision: Some((path, summary)),
    };
    let values = vec![
        id.get().into(),
        path.as_str().into(),
        source.get().into(),
        operator.map(OperatorId::get).into(),
        decision.map(Decision::record).into(),
        conn.timestamp(at),
    ];
    conn.one(sql::APPEND_DECISION, values)
        .await?
        .ok_or_else(|| {
            StoreError::Internal(
                format!(
                    "contact {id} has {} decision entries, the most its history holds",
                    sql::MAX_DECISIONS
                )
                .into(),
            )
        })?;
    append_event_at(conn, &NewEvent::contact(kind, Some(id), &state), at).await
}
