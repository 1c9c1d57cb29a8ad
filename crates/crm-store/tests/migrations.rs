//! The migrations, on both backends: up, all the way down, and up again, each leaving
//! every migration in the state it says, and a store that works on the result. So every
//! `down` undoes its `up` completely enough for the `up` to run again.

use crm_core::{ContactId, DecisionPath, MaxActiveContacts, Name, NewOperator, OperatorId, Store};
use crm_store::{
    MigrateAction, MigrationState, StoreConfig, migrate,
    testing::{Backend, TestDatabase},
};
use sea_orm::ConnectionTrait;

crm_store::on_every_backend!(
    up_down_up_leaves_a_working_schema,
    contacts_stored_before_the_history_get_their_entries,
);

fn applied(states: &[MigrationState]) -> Vec<bool> {
    states.iter().map(|state| state.applied).collect()
}

async fn up_down_up_leaves_a_working_schema(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let config = StoreConfig {
        database_url: db.database_url(),
        ..StoreConfig::default()
    };

    let up = migrate(&config, MigrateAction::Up).await.expect("up");
    assert!(!up.is_empty(), "there are migrations");
    assert!(
        applied(&up).iter().all(|&a| a),
        "all applied after up: {up:?}"
    );
    let names: Vec<&str> = up.iter().map(|state| state.name.as_str()).collect();

    let all = u32::try_from(up.len()).expect("a few migrations");
    let down = migrate(&config, MigrateAction::Down(all))
        .await
        .expect("down all");
    assert!(
        applied(&down).iter().all(|&a| !a),
        "none applied after down: {down:?}"
    );

    let again = migrate(&config, MigrateAction::Up).await.expect("up again");
    assert!(
        applied(&again).iter().all(|&a| a),
        "all applied again: {again:?}"
    );
    assert_eq!(
        again
            .iter()
            .map(|state| state.name.as_str())
            .collect::<Vec<_>>(),
        names,
        "the same migrations, in the same order"
    );

    // The schema the second `up` built is the one the store works on.
    let store = crm_store::connect(&config).await.expect("the store opens");
    let operator = store
        .create_operator(NewOperator {
            name: Name::parse("Anna").expect("name"),
            is_active: true,
            max_active_contacts: MaxActiveContacts::new(2).expect("limit"),
            max_assignments_per_minute: None,
        })
        .await
        .expect("an operator is stored");
    assert_eq!(
        store
            .get_operator(operator.id)
            .await
            .expect("read back")
            .name,
        operator.name
    );
    store.shutdown().await;
    drop(store);
    db.drop_database().await;
}

/// The decision history's migration gives each contact stored before it a first entry from
/// its stored decision (`registered` when it chose an operator, `queued` when not), and a
/// `manual` entry where the operator now differs from the one chosen.
async fn contacts_stored_before_the_history_get_their_entries(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let config = StoreConfig {
        database_url: db.database_url(),
        ..StoreConfig::default()
    };
    let all = migrate(&config, MigrateAction::Up).await.expect("up");
    // Back to before the history: it and every migration after it.
    let history = all
        .iter()
        .position(|m| m.name == "m20261206_000006_contact_decisions")
        .expect("the history's migration");
    let steps = u32::try_from(all.len() - history).expect("a few");
    let before = migrate(&config, MigrateAction::Down(steps))
        .await
        .expect("down to before the history");
    assert_eq!(
        before.iter().find(|m| !m.applied).map(|m| m.name.as_str()),
        Some("m20261206_000006_contact_decisions")
    );
    let raw = sea_orm::Database::connect(&db.url).await.expect("connect");
    let record = |chosen: &str| {
        format!(
            r#"{{"v":2,"candidates":[{{"id":1,"w":1,"load":0,"max":5}},{{"id":2,"w":1,"load":0,"max":5}}],"total":2,"draw":0,"chosen":{chosen}}}"#
        )
    };
    for sql in [
        "INSERT INTO operators (id, name, is_active, max_active_contacts, open_contacts, created_at) \
         VALUES (1, 'A', true, 5, 1, '2026-12-01T10:00:00Z'), (2, 'B', true, 5, 1, '2026-12-01T10:00:00Z')"
            .to_owned(),
        "INSERT INTO sources (id, name, code, created_at) VALUES (1, 'S', 's', '2026-12-01T10:00:00Z')"
            .to_owned(),
        "INSERT INTO leads (id, external_id, created_at) VALUES (1, 'l', '2026-12-01T10:00:00Z')"
            .to_owned(),
        format!(
            "INSERT INTO contacts (id, lead_id, source_id, operator_id, status, payload, decision, created_at) VALUES \
             (1, 1, 1, 1, 'open', '\"a\"', '{}', '2026-12-01T10:00:00Z'), \
             (2, 1, 1, NULL, 'open', '\"b\"', '{}', '2026-12-01T10:01:00Z'), \
             (3, 1, 1, 2, 'open', '\"c\"', '{}', '2026-12-01T10:02:00Z')",
            record("1"),
            record("null").replace(r#""draw":0"#, r#""draw":null"#),
            record("1"),
        ),
    ] {
        raw.execute_unprepared(&sql).await.expect("an old row");
    }
    raw.close().await.expect("close");
    migrate(&config, MigrateAction::Up).await.expect("up again");

    let store = crm_store::connect(&config).await.expect("the store opens");
    let entries = |id| {
        let store = &store;
        async move {
            store
                .contact_decisions(ContactId(id))
                .await
                .expect("history")
                .into_iter()
                .map(|e| {
                    (
                        e.path,
                        e.operator_id.map(OperatorId::get),
                        e.record.is_some(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        entries(1).await,
        vec![(DecisionPath::Registered, Some(1), true)]
    );
    assert_eq!(entries(2).await, vec![(DecisionPath::Queued, None, true)]);
    assert_eq!(
        entries(3).await,
        vec![
            (DecisionPath::Registered, Some(1), true),
            (DecisionPath::Manual, Some(2), false)
        ]
    );
    store.shutdown().await;
    drop(store);
    db.drop_database().await;
}
