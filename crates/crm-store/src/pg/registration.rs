//! The registration's unit of work on PostgreSQL, in as few round trips as the rule
//! allows: one statement reads the source and its candidates with their counters; one
//! claims the chosen operator, finds or creates the lead and inserts the contact.
//!
//! Only that second statement writes, and a statement is atomic on its own: a lost
//! claim writes nothing (no operator row matched, so no lead and no contact either), and
//! a failed one leaves nothing behind. So a registration without an idempotency key runs
//! on one pooled connection ([`crate::conn::PgHeld`]) with no `BEGIN` and `COMMIT`: two
//! round trips instead of four (it was seven with one statement per step), which is what
//! a registration costs on a database reached over a socket, and what several replicas
//! on one database contend with (docs/benchmarks.md). With a key, the key's claim and
//! record need a transaction around the same two statements.
//!
//! Locks are taken in one order by every registration: the key (if any), then for a smooth
//! source its row (`NeedsTransaction`), then the operator (the claim), then the lead (the
//! upsert's no-op update of an existing lead), then the insert's foreign-key checks
//! share-lock the source, lead and operator rows (a share lock the smooth lock, a no-key
//! update, does not conflict with), and last a smooth pick's weight rows. Drains take the
//! waiting contact, then the source row (smooth), then the operator, then the weight rows.
//! Closes and assignments lock a contact, then operators; no other write locks a lead.
//! So two writes of this version never wait for each other in a cycle. Versions before
//! `4e6f6d6` locked the lead before the operator: replicas of both at once can deadlock,
//! which PostgreSQL breaks by failing one statement (a 503, see `crate::error`).

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, IdempotencyKey, Inserted,
    KeyClaim, KeyedRegistrationTx, LeadId, OperatorId, OperatorSummary, Pace, Payload, Prepared,
    RegistrationTx, SourceId, SourceRef, StoreError, Strategy,
};

use sea_orm::sea_query::Value;

use crate::{
    conn::{Conn, DbError, PgConn, PgHeld, Row, returned},
    sql,
};

/// Where a registration's statements run: a transaction ([`PgConn`], which alone can hold
/// an idempotency key, whose claim would otherwise commit before its answer) or a held
/// connection ([`PgHeld`]).
pub trait Session: Conn {
    /// Runs the registration's first statement, which only reads.
    fn read(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>>;

    /// What a lost claim answers: the rule runs again over the other candidates
    /// ([`Inserted::OperatorFull`]), or the unit of work starts over ([`LostClaim`]).
    fn lost_claim() -> Result<Inserted, StoreError>;

    /// Takes the lock that makes a smooth source's picks one at a time (its row, until
    /// the transaction ends), or answers [`NeedsTransaction`] where nothing could hold it.
    fn lock_source(&self, source: SourceId) -> impl Future<Output = Result<(), StoreError>>;
}

/// A smooth source's registration was started outside a transaction: its pick reads and
/// moves the source's credits under the source's lock, which only a transaction holds, so
/// it runs again in one (see [`super::PgStore::register`]).
#[derive(Debug, thiserror::Error)]
#[error("a smooth source's registration runs in a transaction")]
pub struct NeedsTransaction;

/// A keyed registration's claim was lost inside its transaction: the transaction is rolled
/// back and run again from the start (see [`super::PgStore::register_keyed`]).
///
/// A claim that waited for a concurrent claim of the same operator and then found it full
/// updates nothing, but PostgreSQL keeps the row lock it took to re-check the row until the
/// transaction ends. Claiming another operator after it could lock operators out of
/// ascending order, and deadlock with a concurrent assignment that locks them in order.
#[derive(Debug, thiserror::Error)]
#[error("the operator filled up while this transaction claimed it")]
pub struct LostClaim;

impl Session for PgConn<'_> {
    /// A transaction is bound to its connection: a broken one fails the registration (503).
    fn read(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> {
        self.all(sql, values)
    }

    /// The lost claim still holds its operator's row lock: start over.
    fn lost_claim() -> Result<Inserted, StoreError> {
        Err(StoreError::Unavailable(Box::new(LostClaim)))
    }

    async fn lock_source(&self, source: SourceId) -> Result<(), StoreError> {
        returned(
            self.one(sql::LOCK_SOURCE, vec![source.get().into()])
                .await?,
        )
        .map(drop)
        .map_err(|_| StoreError::NotFound(Entity::Source))
    }
}

impl Session for PgHeld {
    /// On a broken connection, once more on a fresh one ([`PgHeld::read`]).
    fn read(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> {
        PgHeld::read(self, sql, values)
    }

    /// The lost claim was its own statement, outside any transaction: it holds nothing.
    fn lost_claim() -> Result<Inserted, StoreError> {
        Ok(Inserted::OperatorFull)
    }

    async fn lock_source(&self, _: SourceId) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(Box::new(NeedsTransaction)))
    }
}

/// `$1` names the source by id ([`PREPARE_BY_ID`]) or by code ([`PREPARE_BY_CODE`]). One
/// row per candidate, or one row with `NULL` candidate columns when the source has no
/// weights; no row at all when the source does not exist. The last column counts the
/// source's waiting contacts up to `Prepared::MAX_AHEAD` (the queue's partial index: one
/// probe when none wait, at most that many index entries otherwise, within this one round
/// trip). In no particular order: the
/// candidates are put in operator order after the read, which costs PostgreSQL a sort
/// node's set-up in every execution when done here (6-12 % of this statement under
/// pgbench, docs/benchmarks.md).
macro_rules! prepare_sql {
    ($source:literal) => {
        concat!(
            "SELECT s.id, o.id, w.weight, o.is_active, o.open_contacts, \
             o.max_active_contacts, o.name, o.max_assignments_per_minute, o.pace_tat_us, \
             (SELECT count(*) FROM (SELECT 1 FROM contacts q \
             WHERE q.source_id = s.id AND q.operator_id IS NULL AND q.status = 'open' \
             LIMIT 100) w), \
             s.strategy, s.sticky_owner, w.credit \
             FROM sources s \
             LEFT JOIN operator_source_weights w ON w.source_id = s.id \
             LEFT JOIN operators o ON o.id = w.operator_id \
             WHERE s.",
            $source,
            " = $1"
        )
    };
}

const PREPARE_BY_ID: &str = prepare_sql!("id");
/// [`sql::LATEST_OWNER`] for the lead `$1` names by its external id.
const LATEST_OWNER_BY_EXTERNAL_ID: &str = "SELECT c.operator_id FROM leads l \
     JOIN contacts c ON c.lead_id = l.id \
     WHERE l.external_id = $1 AND +c.source_id = $2 AND c.operator_id IS NOT NULL \
     ORDER BY c.id DESC LIMIT 1";
const PREPARE_BY_CODE: &str = prepare_sql!("code");

/// The lead `$1` found or created (at `$6`) once the rows of `$from` exist: an existing
/// lead is returned too, by a no-op update of a column no key covers (so its row lock does
/// not block the key-share lock of a foreign-key check).
macro_rules! upsert_lead {
    ($from:literal) => {
        concat!(
            "l AS (INSERT INTO leads (external_id, created_at) SELECT $1, $6 ",
            $from,
            " ON CONFLICT (external_id) DO UPDATE SET created_at = leads.created_at \
             RETURNING id) "
        )
    };
}

/// The contact's insert, for the lead `l`, with the first entry of its decision history on
/// its row (migration `m20261206_000011`) and its `contact.created` event; parameters `$2`
/// to `$7` are the source, the operator, the payload, the decision's record, the time and
/// the event's data.
macro_rules! insert_contact {
    ($operator:literal, $from:literal) => {
        concat!(
            "c AS (INSERT INTO contacts \
             (lead_id, source_id, operator_id, status, payload, created_at, decision, \
             registered_operator_id) \
             SELECT l.id, $2, ",
            $operator,
            ", 'open', $4, $6, $5, ",
            $operator,
            " ",
            $from,
            " RETURNING id, lead_id), \
             e AS (INSERT INTO events (type, at, contact_id, data) \
             SELECT 'contact.created', $6, id, $7 FROM c) \
             SELECT id, lead_id FROM c"
        )
    };
}

/// The capacity claim of operator `$3` (as [`sql::CLAIM_OPERATOR`], or with `$pace` as
/// [`sql::CLAIM_PACED`]), the lead and the insert in one statement: when the claim fails
/// it updates nothing, so neither the lead nor the contact is written and no row comes back.
macro_rules! claim_and_insert {
    ($set:literal, $pace:literal) => {
        concat!(
            "WITH b AS (UPDATE operators SET open_contacts = open_contacts + 1",
            $set,
            " WHERE id = $3 AND is_active AND open_contacts < max_active_contacts",
            $pace,
            " RETURNING id), ",
            upsert_lead!("FROM b"),
            ", ",
            insert_contact!("b.id", "FROM b CROSS JOIN l")
        )
    };
}

/// An unpaced operator's claim (as [`sql::CLAIM_UNPACED`]), the lead and the insert.
const CLAIM_AND_INSERT: &str = claim_and_insert!("", " AND max_assignments_per_minute IS NULL");

/// A paced operator's, as [`sql::CLAIM_PACED`]: `$8` now, `$9` the interval, `$10` the rate
/// and `$11` the tolerance.
const CLAIM_PACED_AND_INSERT: &str = claim_and_insert!(
    ", pace_tat_us = CASE WHEN pace_tat_us > $8 THEN pace_tat_us ELSE $8 END + $9",
    " AND max_assignments_per_minute = $10 AND pace_tat_us - $8 <= $11"
);

/// The lead and an unassigned contact (`$3` is `NULL`) in one statement.
const INSERT_UNASSIGNED: &str = concat!(
    "WITH ",
    upsert_lead!(""),
    ", ",
    insert_contact!("$3", "FROM l")
);

/// One registration: on a transaction ([`PgConn`]) when it carries an idempotency key,
/// on one pooled connection outside any transaction ([`PgHeld`]) otherwise (see the
/// module docs).
pub struct PgRegistration<C> {
    conn: C,
    now: DateTime<Utc>,
    /// The candidates' names, for the answer.
    operators: Vec<OperatorSummary>,
    /// The candidates' paces, by operator, as read.
    paces: Vec<(OperatorId, Pace)>,
    /// The lead named in `prepare`, found or created with the contact.
    external_id: Option<ExternalLeadId>,
}

impl<C: Session> PgRegistration<C> {
    /// A unit of work on `conn`, at `now`.
    pub fn new(conn: C, now: DateTime<Utc>) -> Self {
        Self {
            conn,
            now,
            operators: Vec::new(),
            paces: Vec::new(),
            external_id: None,
        }
    }
}

/// Only inside a transaction: the key's claim and answer commit with the contact.
impl KeyedRegistrationTx for PgRegistration<PgConn<'_>> {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        crate::keys::claim_key(&self.conn, key, self.now).await
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        crate::keys::record_key(&self.conn, key, contact).await
    }
}

impl<C: Session> RegistrationTx for PgRegistration<C> {
    async fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let (statement, source): (_, Value) = match source {
            SourceRef::Id(id) => (PREPARE_BY_ID, id.get().into()),
            SourceRef::Code(code) => (PREPARE_BY_CODE, code.as_str().into()),
        };
        let mut rows = self.conn.read(statement, vec![source.clone()]).await?;
        let first = rows.first().ok_or(StoreError::NotFound(Entity::Source))?;
        let source_id = SourceId(first.get(0)?);
        let rule = sql::stored_rule(&first.get::<String>(10)?, first.get(11)?)?;
        if rule.strategy == Strategy::SmoothWeighted {
            // The credits as they are once this registration holds the source: read again.
            self.conn.lock_source(source_id).await?;
            rows = self.conn.read(statement, vec![source]).await?;
        }
        let first = rows.first().ok_or(StoreError::NotFound(Entity::Source))?;
        let mut candidates = Vec::with_capacity(rows.len());
        self.operators.clear();
        self.paces.clear();
        for row in &rows {
            if row.get::<Option<i64>>(1)?.is_none() {
                continue;
            }
            let (candidate, pace) = sql::candidate_from_row(
                |i| row.get(i + 1),
                |i| row.get(i + 1),
                |i| row.get(i + 1),
                self.now,
            )?;
            if let Some(pace) = pace {
                self.paces.push((candidate.operator_id, pace));
            }
            self.operators.push(OperatorSummary {
                id: candidate.operator_id,
                name: row.get(6)?,
                is_active: candidate.is_active,
            });
            candidates.push((candidate, row.get::<i64>(12)?));
        }
        let ahead: i64 = first.get(9)?;
        // The order of the decision record, and of the draw's slices.
        candidates.sort_unstable_by_key(|(candidate, _)| candidate.operator_id);
        let (candidates, credit): (Vec<_>, Vec<_>) = candidates.into_iter().unzip();
        let credit = match rule.strategy {
            Strategy::SmoothWeighted => credit,
            Strategy::WeightedRandom => Vec::new(),
        };
        let owner = if rule.sticky_owner {
            let values = vec![external_id.as_str().into(), source_id.get().into()];
            let row = self.conn.read(LATEST_OWNER_BY_EXTERNAL_ID, values).await?;
            row.first()
                .map(|row| row.get::<i64>(0))
                .transpose()?
                .map(OperatorId)
        } else {
            None
        };
        self.external_id = Some(external_id.clone());
        Ok(Prepared {
            source_id,
            candidates,
            waiting: ahead > 0,
            ahead: ahead.unsigned_abs(),
            rule,
            owner,
            credit,
        })
    }

    async fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        decision: &Decision,
    ) -> Result<Inserted, StoreError> {
        let external_id = self
            .external_id
            .as_ref()
            .ok_or_else(|| StoreError::Internal("insert before prepare".into()))?;
        let mut values = vec![
            external_id.as_str().into(),
            prepared.source_id.get().into(),
            operator.map(OperatorId::get).into(),
            payload.as_json().into(),
            decision.record().into(),
            self.conn.timestamp(self.now),
            crate::events::created(prepared.source_id, operator, decision)
                .data
                .into(),
        ];
        let pace = operator.and_then(|id| {
            self.paces
                .iter()
                .find_map(|(paced, pace)| (*paced == id).then_some(*pace))
        });
        let statement = match (operator, pace) {
            (None, _) => INSERT_UNASSIGNED,
            (Some(_), None) => CLAIM_AND_INSERT,
            (Some(_), Some(pace)) => {
                let rate = pace.per_minute;
                values.extend([
                    self.now.timestamp_micros().into(),
                    rate.interval_us().into(),
                    i64::from(rate.get()).into(),
                    rate.tolerance_us().into(),
                ]);
                CLAIM_PACED_AND_INSERT
            }
        };
        // The source was read in `prepare`; only its deletion since then can fail the
        // insert's foreign keys (the lead and the operator are written by the statement).
        let row = self
            .conn
            .one(statement, values)
            .await
            .map_err(|err| match err {
                DbError::ForeignKey => StoreError::NotFound(Entity::Source),
                other => other.into(),
            })?;
        let Some(row) = row else {
            return C::lost_claim();
        };
        if let Some(moved) = &decision.credit {
            crate::drain::store_credit(&self.conn, prepared.source_id, &prepared.candidates, moved)
                .await?;
        }
        Ok(Inserted::Stored(Contact {
            id: ContactId(row.get(0)?),
            lead_id: LeadId(row.get(1)?),
            source_id: prepared.source_id,
            operator: operator.and_then(|id| self.operators.iter().find(|o| o.id == id).cloned()),
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: self.now,
            closed_at: None,
            waiting_ahead: None,
        }))
    }
}

#[cfg(all(test, feature = "postgres-tests"))]
mod tests;

#[cfg(test)]
mod statements {
    /// The count in the first statement stops where the core's does.
    #[test]
    fn the_waiting_count_stops_at_the_cores_bound() {
        let bound = format!("LIMIT {})", crm_core::Prepared::MAX_AHEAD);
        assert!(super::PREPARE_BY_ID.contains(&bound));
        assert!(super::PREPARE_BY_CODE.contains(&bound));
    }
}
