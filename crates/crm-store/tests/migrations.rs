//! The migrations, on both backends: up, all the way down, and up again, each leaving
//! every migration in the state it says, and a store that works on the result. So every
//! `down` undoes its `up` completely enough for the `up` to run again.

use crm_core::{MaxActiveContacts, Name, NewOperator, Store};
use crm_store::{
    MigrateAction, MigrationState, StoreConfig, migrate,
    testing::{Backend, TestDatabase},
};

crm_store::on_every_backend!(up_down_up_leaves_a_working_schema);

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
