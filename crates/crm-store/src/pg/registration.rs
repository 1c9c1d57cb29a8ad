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
//! Locks are taken in one order by every write that takes more than one: the key (if
//! any), then the operator (the claim), then the lead (the upsert's no-op update of an
//! existing lead), so two registrations never wait for each other in a cycle.

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, IdempotencyKey, Inserted,
    KeyClaim, LeadId, OperatorId, OperatorSummary, Payload, Prepared, RegistrationTx, SourceId,
    SourceRef, StoreError,
};

use crate::{conn::Conn, ops, sql};

/// `$1` names the source by id ([`PREPARE_BY_ID`]) or by code ([`PREPARE_BY_CODE`]). One
/// row per candidate, or one row with `NULL` candidate columns when the source has no
/// weights; no row at all when the source does not exist.
macro_rules! prepare_sql {
    ($source:literal) => {
        concat!(
            "SELECT s.id, o.id, w.weight, o.is_active, o.open_contacts, \
             o.max_active_contacts, o.name \
             FROM sources s \
             LEFT JOIN operator_source_weights w ON w.source_id = s.id \
             LEFT JOIN operators o ON o.id = w.operator_id \
             WHERE s.",
            $source,
            " = $1 ORDER BY o.id"
        )
    };
}

const PREPARE_BY_ID: &str = prepare_sql!("id");
const PREPARE_BY_CODE: &str = prepare_sql!("code");

/// The lead `$1` found or created (at `$6`) once the rows of `$from` exist: an existing
/// lead is returned too, by a no-op update.
macro_rules! upsert_lead {
    ($from:literal) => {
        concat!(
            "l AS (INSERT INTO leads (external_id, created_at) SELECT $1, $6 ",
            $from,
            " ON CONFLICT (external_id) DO UPDATE SET external_id = excluded.external_id \
             RETURNING id) "
        )
    };
}

/// The contact's insert, for the lead `l`; parameters `$2` to `$6` are the source, the
/// operator, the payload, the decision and the time.
macro_rules! insert_contact {
    ($operator:literal, $from:literal) => {
        concat!(
            "INSERT INTO contacts \
             (lead_id, source_id, operator_id, status, payload, decision, created_at) \
             SELECT l.id, $2, ",
            $operator,
            ", 'open', $4, $5, $6 ",
            $from,
            " RETURNING id, lead_id"
        )
    };
}

/// The capacity claim (as [`sql::CLAIM_OPERATOR`]), the lead and the insert in one
/// statement: when the operator `$3` filled up meanwhile the claim updates nothing, so
/// neither the lead nor the contact is written and no row comes back.
const CLAIM_AND_INSERT: &str = concat!(
    "WITH b AS (UPDATE operators SET open_contacts = open_contacts + 1 \
     WHERE id = $3 AND is_active AND open_contacts < max_active_contacts RETURNING id), ",
    upsert_lead!("FROM b"),
    insert_contact!("b.id", "FROM b CROSS JOIN l")
);

/// The lead and an unassigned contact (`$3` is `NULL`) in one statement.
const INSERT_UNASSIGNED: &str = concat!("WITH ", upsert_lead!(""), insert_contact!("$3", "FROM l"));

/// One registration: on a transaction ([`PgConn`]) when it carries an idempotency key,
/// on one pooled connection outside any transaction ([`PgHeld`]) otherwise (see the
/// module docs).
pub struct PgRegistration<C> {
    conn: C,
    now: DateTime<Utc>,
    /// The candidates' names, for the answer.
    operators: Vec<OperatorSummary>,
    /// The lead named in `prepare`, found or created with the contact.
    external_id: Option<ExternalLeadId>,
}

impl<C: Conn> PgRegistration<C> {
    /// A unit of work on `conn`.
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            now: ops::now(),
            operators: Vec::new(),
            external_id: None,
        }
    }
}

impl<C: Conn> RegistrationTx for PgRegistration<C> {
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
        let rows = self.conn.all(statement, vec![source]).await?;
        let first = rows.first().ok_or(StoreError::NotFound(Entity::Source))?;
        let source_id = SourceId(first.get(0)?);
        let mut candidates = Vec::with_capacity(rows.len());
        self.operators.clear();
        for row in &rows {
            if row.get::<Option<i64>>(1)?.is_none() {
                continue;
            }
            let candidate = sql::candidate_from_row(|i| row.get(i + 1), |i| row.get(i + 1))?;
            self.operators.push(OperatorSummary {
                id: candidate.operator_id,
                name: row.get(6)?,
                is_active: candidate.is_active,
            });
            candidates.push(candidate);
        }
        self.external_id = Some(external_id.clone());
        Ok(Prepared {
            source_id,
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
        let external_id = self
            .external_id
            .as_ref()
            .ok_or_else(|| StoreError::Internal("insert before prepare".into()))?;
        let values = vec![
            external_id.as_str().into(),
            prepared.source_id.get().into(),
            operator.map(OperatorId::get).into(),
            payload.as_json().into(),
            decision.record().into(),
            self.conn.timestamp(self.now),
        ];
        let statement = if operator.is_some() {
            CLAIM_AND_INSERT
        } else {
            INSERT_UNASSIGNED
        };
        let Some(row) = self.conn.one(statement, values).await? else {
            return Ok(Inserted::OperatorFull);
        };
        Ok(Inserted::Stored(Contact {
            id: ContactId(row.get(0)?),
            lead_id: LeadId(row.get(1)?),
            source_id: prepared.source_id,
            operator: operator.and_then(|id| self.operators.iter().find(|o| o.id == id).cloned()),
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: self.now,
            closed_at: None,
        }))
    }
}

#[cfg(all(test, feature = "postgres-tests"))]
mod tests {
    use crm_core::{
        LeadFilter, MaxActiveContacts, Name, NewContact, NewOperator, NewSource, Page, SourceCode,
        Store, Weight, WeightEntry, WeightSet, choose,
    };
    use rand::SeedableRng;

    use super::*;
    use crate::{
        StoreConfig,
        conn::PgHeld,
        testing::{Backend, TestDatabase},
    };

    /// The race a registration without a key loses when another one (here through the
    /// store, in a real deployment on another replica) fills the chosen operator between
    /// the read and the claim: the lost claim writes nothing, not even the new lead, and
    /// the retry stores the contact and its lead in one statement.
    #[tokio::test]
    async fn a_lost_claim_writes_nothing_and_the_retry_writes_all() {
        let db = TestDatabase::create(Backend::Postgres).await;
        let config = StoreConfig {
            database_url: db.url.clone(),
            ..StoreConfig::default()
        };
        let store = crate::connect(&config).await.expect("open store");
        let operator = store
            .create_operator(NewOperator {
                name: Name::parse("Ann").expect("name"),
                is_active: true,
                max_active_contacts: MaxActiveContacts::new(1).expect("max"),
            })
            .await
            .expect("operator")
            .id;
        let source = store
            .create_source(NewSource {
                name: Name::parse("Bot").expect("name"),
                code: SourceCode::parse("bot").expect("code"),
            })
            .await
            .expect("source")
            .id;
        let weights = WeightSet::new(vec![WeightEntry {
            operator_id: operator,
            weight: Weight::new(1).expect("weight"),
        }])
        .expect("weights");
        store
            .replace_weights(source, weights)
            .await
            .expect("weights");
        let new = |lead: &str| NewContact {
            external_lead_id: ExternalLeadId::parse(lead).expect("lead"),
            source: SourceRef::Id(source),
            payload: Payload::from_value(&serde_json::json!("hi")).expect("payload"),
        };
        let lead = |external: &str| {
            let store = &store;
            let external = external.to_owned();
            async move {
                store
                    .list_leads(LeadFilter {
                        external_id: Some(external),
                        page: Page {
                            after: None,
                            limit: 10,
                        },
                    })
                    .await
                    .expect("leads")
            }
        };

        let pool = super::super::open(&config).await.expect("pool");
        let mut late = PgRegistration::new(PgHeld::acquire(&pool).await.expect("connection"));
        let late_lead = new("late");
        let prepared = late
            .prepare(&late_lead.source, &late_lead.external_lead_id)
            .await
            .expect("prepare");
        assert_eq!(prepared.candidates.len(), 1);
        assert_eq!(prepared.candidates[0].open_contacts, 0, "room when read");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let decision = choose(&prepared.candidates, &mut rng);
        assert_eq!(decision.chosen, Some(operator));

        // Meanwhile the operator's only place is taken.
        let first = store.register_contact(new("first")).await.expect("first");
        assert_eq!(first.operator.map(|o| o.id), Some(operator));

        let lost = late
            .insert_contact(&prepared, Some(operator), &late_lead.payload, &decision)
            .await
            .expect("claim");
        assert_eq!(lost, Inserted::OperatorFull);
        assert!(
            lead("late").await.is_empty(),
            "the lost claim wrote the lead"
        );

        let unassigned = choose(&[], &mut rng);
        let Inserted::Stored(contact) = late
            .insert_contact(&prepared, None, &late_lead.payload, &unassigned)
            .await
            .expect("insert")
        else {
            panic!("an unassigned insert cannot lose a claim");
        };
        assert_eq!(contact.operator, None);
        let leads = lead("late").await;
        assert_eq!(leads.len(), 1, "the lead is stored with its contact");
        assert_eq!(leads[0].id, contact.lead_id);
        assert_eq!(
            store.get_contact(contact.id).await.expect("stored"),
            contact
        );
        let operators = store.list_operators(Default::default()).await.expect("ops");
        assert_eq!(operators[0].open_contacts, 1, "one claim counted");

        drop(late);
        pool.close().await.expect("close");
        store.shutdown().await;
        db.drop_database().await;
    }
}
