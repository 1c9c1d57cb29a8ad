//! A close answers the contact its own unit of work left (`ops::close_contact`): equal to
//! what `get_contact` reads right after, whatever the operator, the drain or the race.

use std::sync::Arc;

use crm_core::{
    ContactStatus, ExternalLeadId, Name, NewContact, OperatorPatch, Payload, SourceRef, Store,
};
use crm_store::testing::Backend;

mod support;

use support::*;

crm_store::on_every_backend!(
    a_close_answers_what_a_read_after_it_finds,
    concurrent_closes_answer_what_was_committed,
);

async fn a_close_answers_what_a_read_after_it_finds(backend: Backend) {
    let t = store(backend).await;
    let s = &t.store;
    let ann = operator(s, "Ann", 1).await;
    let bob = operator(s, "Bob", 5).await;
    let one = source(s, "one", &[(ann, 1)]).await;
    let two = source(s, "two", &[(ann, 1)]).await;

    // An odd payload.
    let payload = Payload::from_value(&serde_json::json!({
        "z": 1, "a": [1.5, "é\u{2028}\"\\", null], "nested": {"k": true}
    }))
    .expect("payload");
    let first = s
        .register_contact(NewContact {
            external_lead_id: ExternalLeadId::parse("p1").expect("ext"),
            source: SourceRef::Id(one),
            payload,
        })
        .await
        .expect("register");
    assert_eq!(first.operator.as_ref().map(|o| o.id), Some(ann));
    // Waits (Ann full), of the other source Ann serves.
    let waiting = register(s, "p2", SourceRef::Id(two)).await;
    assert!(waiting.operator.is_none());

    // The operator renamed and deactivated before the close.
    s.update_operator(
        ann,
        OperatorPatch {
            name: Some(Name::parse("Ann renamed").expect("name")),
            is_active: Some(false),
            max_active_contacts: None,
            max_assignments_per_minute: None,
        },
    )
    .await
    .expect("update");
    let before = s.get_contact(first.id).await.expect("get");
    let closed = s.close_contact(first.id).await.expect("close");
    let after = s.get_contact(first.id).await.expect("get");
    assert_eq!(closed, after, "assigned, operator renamed and inactive");
    assert_eq!(closed.created_at, before.created_at);
    assert_eq!(closed.payload, before.payload);
    assert_eq!(closed.status, ContactStatus::Closed);
    let again = s.close_contact(first.id).await.expect("close again");
    assert_eq!(again, closed, "closed already");

    // A waiting contact closed (no operator).
    let closed = s.close_contact(waiting.id).await.expect("close waiting");
    assert_eq!(closed, s.get_contact(waiting.id).await.expect("get"));
    assert!(closed.operator.is_none());

    // A close whose drain hands the freed place on.
    s.update_operator(
        ann,
        OperatorPatch {
            name: None,
            is_active: Some(true),
            max_active_contacts: None,
            max_assignments_per_minute: None,
        },
    )
    .await
    .expect("update");
    let c3 = register(s, "p3", SourceRef::Id(one)).await;
    assert_eq!(c3.operator.as_ref().map(|o| o.id), Some(ann));
    let c4 = register(s, "p4", SourceRef::Id(two)).await;
    assert!(c4.operator.is_none());
    let closed = s.close_contact(c3.id).await.expect("close");
    assert_eq!(
        closed,
        s.get_contact(c3.id).await.expect("get"),
        "with a drain"
    );
    let c4 = s.get_contact(c4.id).await.expect("get");
    assert_eq!(c4.operator.as_ref().map(|o| o.id), Some(ann), "drained");

    // The release in assign and unassign still works with its new RETURNING.
    let moved = s.assign_contact(c4.id, bob).await.expect("assign");
    assert_eq!(moved.operator.as_ref().map(|o| o.id), Some(bob));
    let back = s.unassign_contact(c4.id).await.expect("unassign");
    assert_ne!(back.operator.as_ref().map(|o| o.id), Some(bob));
    let closed = s.close_contact(c4.id).await.expect("close");
    assert_eq!(closed, s.get_contact(c4.id).await.expect("get"));

    assert!(matches!(
        s.close_contact(crm_core::ContactId(9_999)).await,
        Err(crm_core::StoreError::NotFound(crm_core::Entity::Contact))
    ));
    assert_counters_match_rows(s).await;
    t.finish().await;
}

/// Many closes at once (so the SQLite writer groups them), some of the same contact twice:
/// every answer equals a read after (operators never change here).
async fn concurrent_closes_answer_what_was_committed(backend: Backend) {
    let t = store(backend).await;
    let s = &t.store;
    let ann = operator(s, "Ann", 40).await;
    let bob = operator(s, "Bob", 40).await;
    let one = source(s, "one", &[(ann, 1), (bob, 1)]).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(register(s, &format!("l{i}"), SourceRef::Id(one)).await.id);
    }
    let mut tasks = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        for _ in 0..(1 + n % 2) {
            let store = Arc::clone(s);
            tasks.push(tokio::spawn(
                async move { (id, store.close_contact(id).await) },
            ));
        }
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    for (id, answer) in answers {
        let answer = answer.expect("close");
        assert_eq!(answer, s.get_contact(id).await.expect("get"));
    }
    assert_counters_match_rows(s).await;
    t.finish().await;
}
