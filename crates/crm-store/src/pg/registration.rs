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
//! Locks are taken in one order by every registration: the key (if any), then the
//! operator (the claim), then the lead (the upsert's no-op update of an existing lead),
//! then the insert's foreign-key checks share-lock the source, lead and operator rows.
//! Closes and assignments lock a contact, then operators; no other write locks a lead.
//! So two writes of this version never wait for each other in a cycle. Versions before
//! `4e6f6d6` locked the lead before the operator: replicas of both at once can deadlock,
//! which PostgreSQL breaks by failing one statement (a 503, see `crate::error`).

use chrono::{DateTime, Utc};
use crm_core::{
    Contact, ContactId, ContactStatus, Decision, Entity, ExternalLeadId, IdempotencyKey, Inserted,
    KeyClaim, LeadId, OperatorId, OperatorSummary, Payload, Prepared, RegistrationTx, SourceId,
    SourceRef, StoreError,
};

use sea_orm::sea_query::Value;

use crate::{
    conn::{Conn, DbError, PgConn, PgHeld, Row},
    ops, sql,
};

/// Where a registration's statements run.
pub trait Session: Conn {
    /// Inside a transaction, which an idempotency key's claim and record need: on its
    /// own, a claimed key would commit before its answer.
    const TRANSACTION: bool;

    /// Runs the registration's first statement, which only reads.
    fn read(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>>;
}

impl Session for PgConn<'_> {
    const TRANSACTION: bool = true;

    /// A transaction is bound to its connection: a broken one fails the registration (503).
    fn read(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> {
        self.all(sql, values)
    }
}

impl Session for PgHeld {
    const TRANSACTION: bool = false;

    /// On a broken connection, once more on a fresh one ([`PgHeld::read`]).
    fn read(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> {
        PgHeld::read(self, sql, values)
    }
}

fn needs_transaction() -> StoreError {
    StoreError::Internal("an idempotency key needs a transaction".into())
}

/// `$1` names the source by id ([`PREPARE_BY_ID`]) or by code ([`PREPARE_BY_CODE`]). One
/// row per candidate, or one row with `NULL` candidate columns when the source has no
/// weights; no row at all when the source does not exist. In no particular order: the
/// candidates are put in operator order after the read, which costs PostgreSQL a sort
/// node's set-up in every execution when done here (6-12 % of this statement under
/// pgbench, docs/benchmarks.md).
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
            " = $1"
        )
    };
}

const PREPARE_BY_ID: &str = prepare_sql!("id");
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

impl<C: Session> PgRegistration<C> {
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

impl<C: Session> RegistrationTx for PgRegistration<C> {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        if !C::TRANSACTION {
            return Err(needs_transaction());
        }
        ops::claim_key(&self.conn, key, self.now).await
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        if !C::TRANSACTION {
            return Err(needs_transaction());
        }
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
        let rows = self.conn.read(statement, vec![source]).await?;
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
        // The order of the decision record, and of the draw's slices.
        candidates.sort_unstable_by_key(|candidate| candidate.operator_id);
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
        testing::{Backend, TestDatabase},
    };

    /// A store on a fresh PostgreSQL database with one operator of capacity 1 on the
    /// source `bot`, and a pool of its own for units of work driven by hand.
    struct Fixture {
        db: TestDatabase,
        store: crate::DbStore,
        pool: sea_orm::DatabaseConnection,
        operator: OperatorId,
        source: SourceId,
    }

    impl Fixture {
        async fn new() -> Self {
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
            let pool = super::super::open(&config).await.expect("pool");
            Self {
                db,
                store,
                pool,
                operator,
                source,
            }
        }

        fn new_contact(&self, lead: &str) -> NewContact {
            new_contact(self.source, lead)
        }

        /// The operator's stored counter.
        async fn open_contacts(&self) -> i64 {
            let operators = self
                .store
                .list_operators(Default::default())
                .await
                .expect("operators");
            operators[0].open_contacts
        }

        async fn leads(&self, external: &str) -> Vec<crm_core::Lead> {
            self.store
                .list_leads(LeadFilter {
                    external_id: Some(external.to_owned()),
                    page: Page {
                        after: None,
                        limit: 10,
                    },
                })
                .await
                .expect("leads")
        }

        async fn held(&self) -> PgRegistration<PgHeld> {
            PgRegistration::new(PgHeld::acquire(&self.pool).await.expect("connection"))
        }

        async fn finish(self) {
            self.pool.close().await.expect("close");
            self.store.shutdown().await;
            self.db.drop_database().await;
        }
    }

    /// The race a registration without a key loses when another one (here through the
    /// store, in a real deployment on another replica) fills the chosen operator between
    /// the read and the claim: the lost claim writes nothing, not even the new lead, and
    /// the retry stores the contact and its lead in one statement.
    #[tokio::test]
    async fn a_lost_claim_writes_nothing_and_the_retry_writes_all() {
        let f = Fixture::new().await;
        let mut late = f.held().await;
        let late_lead = f.new_contact("late");
        let prepared = late
            .prepare(&late_lead.source, &late_lead.external_lead_id)
            .await
            .expect("prepare");
        assert_eq!(prepared.candidates.len(), 1);
        assert_eq!(prepared.candidates[0].open_contacts, 0, "room when read");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let decision = choose(&prepared.candidates, &mut rng);
        assert_eq!(decision.chosen, Some(f.operator));

        // Meanwhile the operator's only place is taken.
        let first = f
            .store
            .register_contact(f.new_contact("first"))
            .await
            .expect("first");
        assert_eq!(first.operator.map(|o| o.id), Some(f.operator));

        let lost = late
            .insert_contact(&prepared, Some(f.operator), &late_lead.payload, &decision)
            .await
            .expect("claim");
        assert_eq!(lost, Inserted::OperatorFull);
        assert!(
            f.leads("late").await.is_empty(),
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
        let leads = f.leads("late").await;
        assert_eq!(leads.len(), 1, "the lead is stored with its contact");
        assert_eq!(leads[0].id, contact.lead_id);
        assert_eq!(
            f.store.get_contact(contact.id).await.expect("stored"),
            contact
        );
        assert_eq!(f.open_contacts().await, 1, "one claim counted");

        drop(late);
        f.finish().await;
    }

    /// A source deleted between the read and the insert is the client's 404, as if it
    /// had been gone before, and nothing is written: not the lead, not the claim.
    #[tokio::test]
    async fn a_source_deleted_meanwhile_is_not_found_and_nothing_is_written() {
        let f = Fixture::new().await;
        let mut late = f.held().await;
        let new = f.new_contact("orphan");
        let prepared = late
            .prepare(&new.source, &new.external_lead_id)
            .await
            .expect("prepare");
        let decision = choose(
            &prepared.candidates,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        f.store.delete_source(f.source).await.expect("delete");
        for operator in [Some(f.operator), None] {
            let err = late
                .insert_contact(&prepared, operator, &new.payload, &decision)
                .await
                .expect_err("the source is gone");
            assert!(
                matches!(err, StoreError::NotFound(Entity::Source)),
                "{err:?}"
            );
        }
        assert!(f.leads("orphan").await.is_empty(), "a lead was left behind");
        assert_eq!(f.open_contacts().await, 0, "a claim was left behind");
        drop(late);
        f.finish().await;
    }

    /// An idempotency key claimed outside a transaction would commit before its answer;
    /// the held connection refuses it instead.
    #[tokio::test]
    async fn a_key_is_refused_outside_a_transaction() {
        let f = Fixture::new().await;
        let mut held = f.held().await;
        let key = IdempotencyKey::new("admin", "k", "fp").expect("key");
        let err = held.claim_key(&key).await.expect_err("no transaction");
        assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        drop(held);
        f.finish().await;
    }

    /// `replace_weights` keeps each named operator from deletion before it touches the
    /// old weights. Here an operator's deletion (as `delete_operator` ends: the operator
    /// row, then its weights by cascade) is under way, uncommitted, when the weights are
    /// replaced: the replacement waits for it and then finds the operator gone, a 422.
    /// Reading the operator without the lock, it deleted the old weights first, and
    /// against a real `delete_operator` waiting on those rows that was a deadlock; here
    /// it ended in a foreign-key failure (a 500).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replacing_weights_waits_for_a_deletion_of_their_operator() {
        use sea_orm::{ConnectionTrait, TransactionTrait};

        let f = Fixture::new().await;
        let deletion = f.pool.begin().await.expect("begin");
        deletion
            .execute_unprepared(&format!(
                "DELETE FROM operators WHERE id = {}",
                f.operator.get()
            ))
            .await
            .expect("delete the operator");
        let store = &f.store;
        let replace = async {
            let weights = WeightSet::new(vec![WeightEntry {
                operator_id: f.operator,
                weight: Weight::new(2).expect("weight"),
            }])
            .expect("weights");
            store.replace_weights(f.source, weights).await
        };
        let commit = async {
            // Commit only once the replacement waits for a lock.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let waiting =
                    count(&f.pool, "SELECT count(*) FROM pg_locks WHERE NOT granted").await;
                if waiting > 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the replacement never waited"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            deletion.commit().await.expect("commit the deletion");
        };
        let (replaced, ()) = tokio::join!(replace, commit);
        let err = replaced.expect_err("the operator is gone");
        assert!(
            matches!(err, StoreError::UnknownOperator { index: Some(0), operator_id } if operator_id == f.operator),
            "{err:?}"
        );
        f.finish().await;
    }

    /// After every pooled connection was broken under the pool (a server restart, or
    /// here its sessions terminated), no registration fails. The first one, without a
    /// key, finds its connection broken at its read and reads again on a fresh one. From
    /// then on connections are checked before use, so registrations with a key, whose
    /// transaction cannot move to another connection, get sound ones too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn after_connections_break_no_registration_fails() {
        use sea_orm::ConnectionTrait;

        let f = Fixture::new().await;
        let store = std::sync::Arc::new(f.store);
        // Open every connection the store's pool may hold.
        let mut warm = tokio::task::JoinSet::new();
        for i in 0..32 {
            let store = std::sync::Arc::clone(&store);
            let new = new_contact(f.source, &format!("warm-{i}"));
            warm.spawn(async move { store.register_contact(new).await });
        }
        while let Some(done) = warm.join_next().await {
            done.expect("task").expect("warm-up registration");
        }
        let status = store.pool_status();
        assert!(status.connections >= 2, "too few connections: {status:?}");
        // Within a second of their last use, so the idle check does not look at them.
        f.pool
            .execute_unprepared(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await
            .expect("terminate the sessions");
        store
            .register_contact(new_contact(f.source, "after"))
            .await
            .expect("a registration on a broken connection reads again on a fresh one");
        for i in 0..status.connections {
            let key =
                crm_core::IdempotencyKey::new("test", &format!("after-{i}"), "body").expect("key");
            store
                .register_contact_once(new_contact(f.source, &format!("after-{i}")), key)
                .await
                .unwrap_or_else(|err| panic!("keyed registration {i}: {err:?}"));
        }
        let stored = count(&f.pool, "SELECT count(*) FROM contacts").await;
        assert_eq!(stored, 32 + 1 + i64::from(status.connections));
        let store = std::sync::Arc::into_inner(store).expect("the only handle");
        Fixture { store, ..f }.finish().await;
    }

    /// The number a `SELECT count(*) …` returns on `pool`.
    async fn count(pool: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
        use sea_orm::ConnectionTrait;
        pool.query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await
        .expect("count")
        .expect("a row")
        .try_get_by_index(0)
        .expect("a number")
    }

    /// A registration of `lead` on `source` (the store's handle may have left the fixture).
    fn new_contact(source: SourceId, lead: &str) -> NewContact {
        NewContact {
            external_lead_id: ExternalLeadId::parse(lead).expect("lead"),
            source: SourceRef::Id(source),
            payload: Payload::from_value(&serde_json::json!("hi")).expect("payload"),
        }
    }
}
