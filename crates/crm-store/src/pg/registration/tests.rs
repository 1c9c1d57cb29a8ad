//! The PostgreSQL registration against a live server: lost claims, deleted sources, keys
//! outside a transaction, lock order with a deletion, and broken pooled connections.

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
            database_url: db.database_url(),
            ..StoreConfig::default()
        };
        let store = crate::connect(&config).await.expect("open store");
        let operator = store
            .create_operator(NewOperator {
                name: Name::parse("Ann").expect("name"),
                is_active: true,
                max_active_contacts: MaxActiveContacts::new(1).expect("max"),
                max_assignments_per_minute: None,
            })
            .await
            .expect("operator")
            .id;
        let source = store
            .create_source(NewSource {
                name: Name::parse("Bot").expect("name"),
                code: SourceCode::parse("bot").expect("code"),
                rule: crm_core::SourceRule::default(),
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
        let crate::DatabaseUrl::Postgres(url) = &config.database_url else {
            panic!("a postgres test database")
        };
        let pool = super::super::open(url, &config).await.expect("pool").reader;
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
        PgRegistration::new(
            PgHeld::acquire(&self.pool).await.expect("connection"),
            crate::clock::now(),
        )
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

/// Inside a transaction (a registration with a key) a claim that waited for a concurrent
/// claim of the same operator, and then found it full, keeps that operator's row lock
/// until the transaction ends: claiming another operator next could lock operators out
/// of their ascending order and deadlock with an assignment. So the registration reports
/// [`LostClaim`] instead of drawing again, and the store runs the transaction again from
/// the start: here the second attempt reads the operator full and stores the contact
/// unassigned, with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lost_in_a_transaction_starts_it_over() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let f = Fixture::new().await;
    let claim_the_place = format!(
        "UPDATE operators SET open_contacts = open_contacts + 1 WHERE id = {}",
        f.operator.get()
    );
    let lock_nowait = format!(
        "SELECT id FROM operators WHERE id = {} FOR NO KEY UPDATE NOWAIT",
        f.operator.get()
    );

    // By hand: the transaction's claim waits for another, which commits.
    let holder = f.pool.begin().await.expect("begin");
    holder
        .execute_unprepared(&claim_the_place)
        .await
        .expect("take the only place");
    let txn = f.pool.begin().await.expect("begin");
    let mut keyed = PgRegistration::new(PgConn(&txn), crate::clock::now());
    let new = f.new_contact("keyed");
    let prepared = keyed
        .prepare(&new.source, &new.external_lead_id)
        .await
        .expect("prepare");
    let decision = choose(
        &prepared.candidates,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
    );
    assert_eq!(decision.chosen, Some(f.operator));
    let claim = keyed.insert_contact(&prepared, Some(f.operator), &new.payload, &decision);
    let (lost, ()) = tokio::join!(claim, commit_once_waited_for(&f.pool, holder));
    let err = lost.expect_err("a lost claim in a transaction");
    assert!(
        matches!(&err, StoreError::Unavailable(cause) if cause.is::<LostClaim>()),
        "{err:?}"
    );
    f.pool
        .execute_unprepared(&lock_nowait)
        .await
        .expect_err("the lost claim still holds the operator's row lock");
    txn.rollback().await.expect("rollback");
    f.pool
        .execute_unprepared(&lock_nowait)
        .await
        .expect("the rollback released it");

    // Through the store: the first attempt loses, the second stores it unassigned.
    f.pool
        .execute_unprepared(&format!(
            "UPDATE operators SET open_contacts = 0 WHERE id = {}",
            f.operator.get()
        ))
        .await
        .expect("free the place");
    let holder = f.pool.begin().await.expect("begin");
    holder
        .execute_unprepared(&claim_the_place)
        .await
        .expect("take the only place");
    let key = crm_core::IdempotencyKey::new("test", "k", "body").expect("key");
    let register = f
        .store
        .register_contact_once(f.new_contact("through-the-store"), key.clone());
    let (registered, ()) = tokio::join!(register, commit_once_waited_for(&f.pool, holder));
    let registered = registered.expect("the second attempt stores it");
    assert_eq!(registered.contact.operator, None);
    assert_eq!(
        f.open_contacts().await,
        1,
        "only the holder's claim counted"
    );
    let replay = f
        .store
        .register_contact_once(f.new_contact("through-the-store"), key)
        .await
        .expect("replay");
    assert!(replay.replayed, "the key was stored with the contact");
    assert_eq!(replay.contact, registered.contact);
    f.finish().await;
}

/// Commits `tx` once some statement waits for a lock (at most 10 s).
async fn commit_once_waited_for(
    pool: &sea_orm::DatabaseConnection,
    tx: sea_orm::DatabaseTransaction,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(pool, "SELECT count(*) FROM pg_locks WHERE NOT granted").await == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing ever waited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tx.commit().await.expect("commit");
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
    let (replaced, ()) = tokio::join!(replace, commit_once_waited_for(&f.pool, deletion));
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
