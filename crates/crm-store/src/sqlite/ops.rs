//! The writes, as synchronous functions over the writer's connection. Each runs inside
//! the savepoint the writer opened for it, so an error leaves nothing behind.

use std::future::{Future, ready};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use crm_core::{
    Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, Inserted, LeadId,
    NewOperator, NewSource, OperatorId, OperatorPatch, OperatorSummary, Payload, Prepared,
    RegistrationTx, SourceId, SourcePatch, SourceRef, StoreError, WeightSet,
};
use sea_orm_sync::{
    ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TryGetable, Value,
};

use crate::{
    error::{is_unique_violation, sync_err},
    sql,
};

/// The current time at the precision stored (microseconds), so what a write returns
/// equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn ts(t: DateTime<Utc>) -> Value {
    t.to_rfc3339_opts(SecondsFormat::Micros, true).into()
}

/// SQLite reads `$2` as a *named* parameter numbered by first appearance, so the shared
/// `$n` placeholders become `?n`, which SQLite numbers explicitly.
fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql.replace('$', "?"), values)
}

fn query_one(
    conn: &DatabaseConnection,
    sql: &str,
    values: Vec<Value>,
) -> Result<Option<QueryResult>, sea_orm_sync::DbErr> {
    conn.query_one_raw(stmt(sql, values))
}

fn one(
    conn: &DatabaseConnection,
    sql: &str,
    values: Vec<Value>,
) -> Result<Option<QueryResult>, StoreError> {
    query_one(conn, sql, values).map_err(sync_err)
}

fn col<T: TryGetable>(row: &QueryResult, index: usize) -> Result<T, StoreError> {
    row.try_get_by_index(index).map_err(sync_err)
}

/// Inserts an operator; returns its id.
pub fn create_operator(
    conn: &DatabaseConnection,
    new: &NewOperator,
) -> Result<OperatorId, StoreError> {
    let row = one(
        conn,
        sql::INSERT_OPERATOR,
        vec![
            new.name.as_str().into(),
            new.is_active.into(),
            new.max_active_contacts.get().into(),
            ts(now()),
        ],
    )?
    .ok_or_else(|| StoreError::Internal("insert returned no row".into()))?;
    Ok(OperatorId(col(&row, 0)?))
}

/// Changes the given fields.
pub fn update_operator(
    conn: &DatabaseConnection,
    id: OperatorId,
    patch: &OperatorPatch,
) -> Result<(), StoreError> {
    one(
        conn,
        sql::UPDATE_OPERATOR,
        vec![
            id.get().into(),
            patch.name.as_ref().map(|n| n.as_str().to_owned()).into(),
            patch.is_active.into(),
            patch.max_active_contacts.map(|m| m.get()).into(),
        ],
    )?
    .map(drop)
    .ok_or(StoreError::NotFound(Entity::Operator))
}

/// Deletes an operator that never had contacts.
pub fn delete_operator(conn: &DatabaseConnection, id: OperatorId) -> Result<(), StoreError> {
    if one(conn, sql::OPERATOR_EXISTS, vec![id.get().into()])?.is_none() {
        return Err(StoreError::NotFound(Entity::Operator));
    }
    if one(conn, sql::OPERATOR_HAS_CONTACTS, vec![id.get().into()])?.is_some() {
        return Err(StoreError::OperatorHasContacts);
    }
    one(conn, sql::DELETE_OPERATOR, vec![id.get().into()]).map(drop)
}

/// Inserts a source; returns its id.
pub fn create_source(conn: &DatabaseConnection, new: &NewSource) -> Result<SourceId, StoreError> {
    let row = query_one(
        conn,
        sql::INSERT_SOURCE,
        vec![
            new.name.as_str().into(),
            new.code.as_str().into(),
            ts(now()),
        ],
    )
    .map_err(code_taken)?
    .ok_or_else(|| StoreError::Internal("insert returned no row".into()))?;
    Ok(SourceId(col(&row, 0)?))
}

/// Changes the given fields.
pub fn update_source(
    conn: &DatabaseConnection,
    id: SourceId,
    patch: &SourcePatch,
) -> Result<(), StoreError> {
    query_one(
        conn,
        sql::UPDATE_SOURCE,
        vec![
            id.get().into(),
            patch.name.as_ref().map(|n| n.as_str().to_owned()).into(),
            patch.code.as_ref().map(|c| c.as_str().to_owned()).into(),
        ],
    )
    .map_err(code_taken)?
    .map(drop)
    .ok_or(StoreError::NotFound(Entity::Source))
}

fn code_taken(err: sea_orm_sync::DbErr) -> StoreError {
    if is_unique_violation(&err) {
        StoreError::SourceCodeTaken
    } else {
        sync_err(err)
    }
}

/// Deletes a source that never had contacts.
pub fn delete_source(conn: &DatabaseConnection, id: SourceId) -> Result<(), StoreError> {
    if one(conn, sql::SOURCE_BY_ID, vec![id.get().into()])?.is_none() {
        return Err(StoreError::NotFound(Entity::Source));
    }
    if one(conn, sql::SOURCE_HAS_CONTACTS, vec![id.get().into()])?.is_some() {
        return Err(StoreError::SourceHasContacts);
    }
    one(conn, sql::DELETE_SOURCE, vec![id.get().into()]).map(drop)
}

/// Replaces a source's weights.
pub fn replace_weights(
    conn: &DatabaseConnection,
    id: SourceId,
    weights: &WeightSet,
) -> Result<(), StoreError> {
    if one(conn, sql::SOURCE_BY_ID, vec![id.get().into()])?.is_none() {
        return Err(StoreError::NotFound(Entity::Source));
    }
    for (index, entry) in weights.entries().iter().enumerate() {
        if one(
            conn,
            sql::OPERATOR_EXISTS,
            vec![entry.operator_id.get().into()],
        )?
        .is_none()
        {
            return Err(StoreError::UnknownOperator {
                index: Some(index),
                operator_id: entry.operator_id,
            });
        }
    }
    one(conn, sql::DELETE_WEIGHTS, vec![id.get().into()])?;
    for entry in weights.entries() {
        one(
            conn,
            sql::INSERT_WEIGHT,
            vec![
                entry.operator_id.get().into(),
                id.get().into(),
                entry.weight.get().into(),
            ],
        )?;
    }
    Ok(())
}

/// Closes an open contact and releases its operator; a closed one stays as it is.
pub fn close_contact(conn: &DatabaseConnection, id: ContactId) -> Result<(), StoreError> {
    match one(conn, sql::CLOSE_CONTACT, vec![id.get().into(), ts(now())])? {
        Some(row) => {
            if let Some(operator_id) = col::<Option<i64>>(&row, 0)? {
                one(conn, sql::RELEASE_OPERATOR, vec![operator_id.into()])?;
            }
            Ok(())
        }
        None if one(conn, sql::CONTACT_STATE, vec![id.get().into()])?.is_some() => Ok(()),
        None => Err(StoreError::NotFound(Entity::Contact)),
    }
}

/// Assigns an open contact to an operator by hand.
pub fn assign_contact(
    conn: &DatabaseConnection,
    id: ContactId,
    operator_id: OperatorId,
) -> Result<(), StoreError> {
    let contact = one(conn, sql::CONTACT_STATE, vec![id.get().into()])?
        .ok_or(StoreError::NotFound(Entity::Contact))?;
    let status: String = col(&contact, 0)?;
    let current: Option<i64> = col(&contact, 1)?;
    if status != ContactStatus::Open.as_str() {
        return Err(StoreError::ContactClosed);
    }
    let operator = one(conn, sql::OPERATOR_LOAD, vec![operator_id.get().into()])?.ok_or(
        StoreError::UnknownOperator {
            index: None,
            operator_id,
        },
    )?;
    if current == Some(operator_id.get()) {
        return Ok(());
    }
    let is_active: bool = col(&operator, 0)?;
    let open: i64 = col(&operator, 1)?;
    let max: i64 = col(&operator, 2)?;
    if !is_active {
        return Err(StoreError::OperatorInactive);
    }
    if open >= max || one(conn, sql::CLAIM_OPERATOR, vec![operator_id.get().into()])?.is_none() {
        return Err(StoreError::OperatorAtCapacity);
    }
    if let Some(previous) = current {
        one(conn, sql::RELEASE_OPERATOR, vec![previous.into()])?;
    }
    one(
        conn,
        sql::SET_CONTACT_OPERATOR,
        vec![id.get().into(), operator_id.get().into()],
    )
    .map(drop)
}

/// One registration's unit of work on the writer's connection. Its futures are ready at
/// once: the connection is synchronous, and the writer drives the use case with
/// `pollster::block_on`.
pub struct SqliteRegistration<'a> {
    conn: &'a DatabaseConnection,
    now: DateTime<Utc>,
    operators: Vec<OperatorSummary>,
}

impl<'a> SqliteRegistration<'a> {
    /// A unit of work on `conn`, which the caller has put inside a savepoint.
    pub fn new(conn: &'a DatabaseConnection) -> Self {
        Self {
            conn,
            now: now(),
            operators: Vec::new(),
        }
    }

    fn prepare_now(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let source = match source {
            SourceRef::Id(id) => one(self.conn, sql::SOURCE_BY_ID, vec![id.get().into()])?,
            SourceRef::Code(code) => {
                one(self.conn, sql::SOURCE_BY_CODE, vec![code.as_str().into()])?
            }
        }
        .ok_or(StoreError::NotFound(Entity::Source))?;
        let source_id = SourceId(col(&source, 0)?);
        let lead = one(
            self.conn,
            sql::UPSERT_LEAD,
            vec![external_id.as_str().into(), ts(self.now)],
        )?
        .ok_or_else(|| StoreError::Internal("lead upsert returned no row".into()))?;
        let lead_id = LeadId(col(&lead, 0)?);
        let rows = self
            .conn
            .query_all_raw(stmt(sql::CANDIDATES, vec![source_id.get().into()]))
            .map_err(sync_err)?;
        let mut candidates = Vec::with_capacity(rows.len());
        self.operators.clear();
        for row in &rows {
            let candidate =
                sql::candidate_from_row(|i| col::<i64>(row, i), |i| col::<bool>(row, i))?;
            self.operators.push(OperatorSummary {
                id: candidate.operator_id,
                name: col(row, 5)?,
                is_active: candidate.is_active,
            });
            candidates.push(candidate);
        }
        Ok(Prepared {
            source_id,
            lead_id,
            candidates,
        })
    }

    fn insert_now(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        decision: &Decision,
    ) -> Result<Inserted, StoreError> {
        if let Some(id) = operator
            && one(self.conn, sql::CLAIM_OPERATOR, vec![id.get().into()])?.is_none()
        {
            return Ok(Inserted::OperatorFull);
        }
        let decision_json =
            serde_json::to_string(decision).map_err(|err| StoreError::Internal(Box::new(err)))?;
        let row = one(
            self.conn,
            sql::INSERT_CONTACT,
            vec![
                prepared.lead_id.get().into(),
                prepared.source_id.get().into(),
                operator.map(OperatorId::get).into(),
                payload.as_json().into(),
                decision_json.into(),
                ts(self.now),
            ],
        )?
        .ok_or_else(|| StoreError::Internal("insert returned no row".into()))?;
        Ok(Inserted::Stored(Contact {
            id: ContactId(col(&row, 0)?),
            lead_id: prepared.lead_id,
            source_id: prepared.source_id,
            operator: operator.and_then(|id| self.operators.iter().find(|o| o.id == id).cloned()),
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: self.now,
            closed_at: None,
        }))
    }
}

impl RegistrationTx for SqliteRegistration<'_> {
    fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> impl Future<Output = Result<Prepared, StoreError>> {
        ready(self.prepare_now(source, external_id))
    }

    fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        decision: &Decision,
    ) -> impl Future<Output = Result<Inserted, StoreError>> {
        ready(self.insert_now(prepared, operator, payload, decision))
    }
}
