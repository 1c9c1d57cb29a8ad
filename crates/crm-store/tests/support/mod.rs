//! What the store's test files share: a store on a fresh database of either backend,
//! entities made in one call, and the check that every counter equals its rows.

// Each test file uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use crm_core::{
    ContactFilter, ContactStatus, ExternalLeadId, MaxActiveContacts, Name, NewContact, NewOperator,
    NewSource, OperatorFilter, OperatorId, Page, Payload, SourceCode, SourceId, SourceRef, Store,
    Weight, WeightEntry, WeightSet,
};
use crm_store::{
    DbStore, StoreConfig,
    testing::{Backend, TestDatabase},
};

pub struct TestStore {
    pub store: Arc<DbStore>,
    pub db: TestDatabase,
}

impl TestStore {
    pub async fn finish(self) {
        self.store.shutdown().await;
        drop(self.store);
        self.db.drop_database().await;
    }
}

pub async fn store(backend: Backend) -> TestStore {
    open(TestDatabase::create(backend).await).await
}

/// The store on `db`, as the server opens it.
pub async fn open(db: TestDatabase) -> TestStore {
    let config = StoreConfig {
        database_url: db.database_url(),
        ..StoreConfig::default()
    };
    let store = crm_store::connect(&config).await.expect("open store");
    TestStore {
        store: Arc::new(store),
        db,
    }
}

/// A store on a fresh database whose registrations, drains and reports run on `clock`.
pub async fn store_on(backend: Backend, clock: &crm_store::Clock) -> TestStore {
    let db = TestDatabase::create(backend).await;
    let config = StoreConfig {
        database_url: db.database_url(),
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    let store = crm_store::connect(&config).await.expect("open store");
    TestStore {
        store: Arc::new(store),
        db,
    }
}

pub async fn operator(store: &DbStore, name: &str, max: i64) -> OperatorId {
    store
        .create_operator(NewOperator {
            name: Name::parse(name).expect("name"),
            is_active: true,
            max_active_contacts: MaxActiveContacts::new(max).expect("max"),
            max_assignments_per_minute: None,
        })
        .await
        .expect("create operator")
        .id
}

pub async fn source(store: &DbStore, code: &str, weights: &[(OperatorId, i64)]) -> SourceId {
    let id = store
        .create_source(NewSource {
            name: Name::parse(code).expect("name"),
            code: SourceCode::parse(code).expect("code"),
            rule: crm_core::SourceRule::default(),
        })
        .await
        .expect("create source")
        .id;
    let set = WeightSet::new(
        weights
            .iter()
            .map(|&(operator_id, w)| WeightEntry {
                operator_id,
                weight: Weight::new(w).expect("weight"),
            })
            .collect(),
    )
    .expect("weights");
    store.replace_weights(id, set).await.expect("weights");
    id
}

pub fn contact(external: &str, source: SourceRef) -> NewContact {
    NewContact {
        external_lead_id: ExternalLeadId::parse(external).expect("external id"),
        source,
        payload: Payload::from_value(&serde_json::json!({"text": "hi"})).expect("payload"),
    }
}

/// Registers a contact for `external` on `source`, which must succeed.
pub async fn register(store: &DbStore, external: &str, source: SourceRef) -> crm_core::Contact {
    store
        .register_contact(contact(external, source))
        .await
        .expect("register")
}

pub async fn all_contacts(store: &DbStore) -> Vec<crm_core::Contact> {
    contacts(store, None, Page::MAX_LIMIT).await
}

/// The first `limit` contacts, with `status` if given.
pub async fn contacts(
    store: &DbStore,
    status: Option<ContactStatus>,
    limit: u32,
) -> Vec<crm_core::Contact> {
    store
        .list_contacts(ContactFilter {
            status,
            operator_id: None,
            source_id: None,
            lead_id: None,
            unassigned: false,
            page: Page { after: None, limit },
        })
        .await
        .expect("list contacts")
}

/// Every operator's counter equals its open rows and stays within its limit.
pub async fn assert_counters_match_rows(store: &DbStore) {
    let contacts = all_contacts(store).await;
    for op in store
        .list_operators(OperatorFilter::default())
        .await
        .expect("operators")
    {
        let open = contacts
            .iter()
            .filter(|c| {
                c.status == ContactStatus::Open && c.operator.as_ref().map(|o| o.id) == Some(op.id)
            })
            .count() as i64;
        assert_eq!(op.open_contacts, open, "counter of operator {}", op.id);
        assert!(
            open <= op.max_active_contacts.get(),
            "operator {} over its limit",
            op.id
        );
    }
}
