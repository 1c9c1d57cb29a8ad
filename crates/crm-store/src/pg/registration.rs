//! The registration's unit of work on PostgreSQL, in as few round trips as the rule
//! allows: one statement finds the source, finds or creates the lead and reads the
//! candidates with their counters; one claims the chosen operator and inserts the
//! contact. With `BEGIN` and `COMMIT` that is four round trips (it was seven with one
//! statement per step), which is what a registration costs on a database reached over a
//! socket, and what several replicas on one database contend with (docs/benchmarks.md).

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, IdempotencyKey, Inserted,
    KeyClaim, LeadId, OperatorId, OperatorSummary, Payload, Prepared, RegistrationTx, SourceId,
    SourceRef, StoreError,
};

use crate::{
    conn::{Conn, PgConn},
    ops, sql,
};

/// `$1` names the source by id ([`PREPARE_BY_ID`]) or by code ([`PREPARE_BY_CODE`]); the
/// lead is inserted only when the source exists (no row at all means it does not), and
/// is returned whether it was new or not. One row per candidate, or one row with `NULL`
/// candidate columns when the source has no weights.
macro_rules! prepare_sql {
    ($source:literal) => {
        concat!(
            "WITH s AS (SELECT id FROM sources WHERE ",
            $source,
            " = $1), \
             l AS (INSERT INTO leads (external_id, created_at) SELECT $2, $3 FROM s \
             ON CONFLICT (external_id) DO UPDATE SET external_id = excluded.external_id \
             RETURNING id) \
             SELECT s.id, l.id, o.id, w.weight, o.is_active, o.open_contacts, \
             o.max_active_contacts, o.name \
             FROM s CROSS JOIN l \
             LEFT JOIN operator_source_weights w ON w.source_id = s.id \
             LEFT JOIN operators o ON o.id = w.operator_id \
             ORDER BY o.id"
        )
    };
}

const PREPARE_BY_ID: &str = prepare_sql!("id");
const PREPARE_BY_CODE: &str = prepare_sql!("code");

/// The capacity claim ([`sql::CLAIM_OPERATOR`]) and the insert in one statement: when the
/// operator filled up meanwhile the claim updates nothing, so nothing is inserted and no
/// row comes back.
const CLAIM_AND_INSERT: &str = "WITH b AS (UPDATE operators SET open_contacts = open_contacts + 1 \
     WHERE id = $3 AND is_active AND open_contacts < max_active_contacts RETURNING id) \
     INSERT INTO contacts (lead_id, source_id, operator_id, status, payload, decision, created_at) \
     SELECT $1, $2, b.id, 'open', $4, $5, $6 FROM b RETURNING id";

/// One registration inside its own transaction.
pub struct PgRegistration<'t> {
    conn: PgConn<'t>,
    now: DateTime<Utc>,
    /// The candidates' names, for the answer.
    operators: Vec<OperatorSummary>,
}

impl<'t> PgRegistration<'t> {
    /// A unit of work on `txn`.
    pub fn new(txn: &'t sea_orm::DatabaseTransaction) -> Self {
        Self {
            conn: PgConn(txn),
            now: ops::now(),
            operators: Vec::new(),
        }
    }
}

impl RegistrationTx for PgRegistration<'_> {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        ops::claim_key(&self.conn, key, self.now).await
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        ops::record_key(&self.conn, key, contact, self.now).await
    }

    async fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let (statement, source) = match source {
            SourceRef::Id(id) => (PREPARE_BY_ID, id.get().into()),
            SourceRef::Code(code) => (PREPARE_BY_CODE, code.as_str().into()),
        };
        let values = vec![
            source,
            external_id.as_str().into(),
            self.conn.timestamp(self.now),
        ];
        let rows = self.conn.all(statement, values).await?;
        let first = rows.first().ok_or(StoreError::NotFound(Entity::Source))?;
        let source_id = SourceId(first.get(0)?);
        let lead_id = LeadId(first.get(1)?);
        let mut candidates = Vec::with_capacity(rows.len());
        self.operators.clear();
        for row in &rows {
            if row.get::<Option<i64>>(2)?.is_none() {
                continue;
            }
            let candidate = sql::candidate_from_row(|i| row.get(i + 2), |i| row.get(i + 2))?;
            self.operators.push(OperatorSummary {
                id: candidate.operator_id,
                name: row.get(7)?,
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

    async fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        decision: &Decision,
    ) -> Result<Inserted, StoreError> {
        let decision_json = decision.record();
        let values = vec![
            prepared.lead_id.get().into(),
            prepared.source_id.get().into(),
            operator.map(OperatorId::get).into(),
            payload.as_json().into(),
            decision_json.into(),
            self.conn.timestamp(self.now),
        ];
        let statement = if operator.is_some() {
            CLAIM_AND_INSERT
        } else {
            sql::INSERT_CONTACT
        };
        let Some(row) = self.conn.one(statement, values).await? else {
            return Ok(Inserted::OperatorFull);
        };
        Ok(Inserted::Stored(Contact {
            id: ContactId(row.get(0)?),
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
