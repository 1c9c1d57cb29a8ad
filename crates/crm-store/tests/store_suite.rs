//! The store on real databases, the same suite on a temporary SQLite file and on a
//! temporary PostgreSQL database: the capacity rule under concurrency, atomicity of
//! registrations and the counters' agreement with the rows.

use std::sync::Arc;

use crm_core::{
    ContactStatus, Entity, IdempotencyKey, MaxActiveContacts, Name, NewSourceKey, OperatorId, Page,
    Payload, SourceCode, SourceId, SourceKeyId, SourceRef, Store, StoreError, Weight, WeightEntry,
    WeightSet,
};
use crm_store::{
    DbStore, StoreConfig,
    testing::{Backend, TestDatabase},
};

mod support;

use support::*;

crm_store::on_every_backend!(
    concurrent_registrations_never_exceed_capacity,
    unknown_source_writes_nothing,
    closing_frees_capacity_and_same_lead_is_reused,
    manual_assignment_moves_the_load,
    an_idempotency_key_replays_and_refuses_reuse,
    concurrent_requests_with_one_key_store_one_contact,
    source_keys_are_stored_as_hashes_listed_and_revoked,
    registrations_see_every_change_made_between_them,
    refused_writes_fail_before_writing,
    an_expired_idempotency_key_is_taken_over,
    mixed_writes_on_shared_rows_never_deadlock,
    the_decision_lists_candidates_in_operator_order,
    the_scrape_figures_follow_every_write,
);

async fn concurrent_registrations_never_exceed_capacity(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 5).await;
    let b = operator(&t.store, "B", 3).await;
    let src = source(&t.store, "bot", &[(a, 1), (b, 2)]).await;

    let mut tasks = Vec::new();
    for task in 0..32 {
        let store = Arc::clone(&t.store);
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in (task..200).step_by(32) {
                results.push(
                    store
                        .register_contact(contact(&format!("lead-{i}"), SourceRef::Id(src)))
                        .await,
                );
            }
            results
        }));
    }
    let mut stored = Vec::new();
    for task in tasks {
        for result in task.await.expect("task") {
            stored.push(result.expect("registration"));
        }
    }
    assert_eq!(stored.len(), 200);
    let assigned = stored.iter().filter(|c| c.operator.is_some()).count();
    assert_eq!(assigned, 8);
    let rows = all_contacts(&t.store).await;
    assert_eq!(rows.len(), 200);
    assert_eq!(rows.iter().filter(|c| c.operator.is_none()).count(), 192);
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

async fn unknown_source_writes_nothing(backend: Backend) {
    let t = store(backend).await;
    let err = t
        .store
        .register_contact(contact(
            "ghost",
            SourceRef::Code(SourceCode::parse("nope").expect("code")),
        ))
        .await
        .expect_err("unknown source");
    assert!(
        matches!(err, StoreError::NotFound(Entity::Source)),
        "{err:?}"
    );
    let leads = t
        .store
        .list_leads(crm_core::LeadFilter {
            external_id: None,
            page: Page {
                after: None,
                limit: 10,
            },
        })
        .await
        .expect("leads");
    assert!(leads.is_empty(), "a lead was left behind: {leads:?}");
    t.finish().await;
}

async fn closing_frees_capacity_and_same_lead_is_reused(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s1 = source(&t.store, "one", &[(a, 1)]).await;
    let s2 = source(&t.store, "two", &[(a, 1)]).await;
    let first = t
        .store
        .register_contact(contact("same", SourceRef::Id(s1)))
        .await
        .expect("first");
    let second = t
        .store
        .register_contact(contact("same", SourceRef::Id(s2)))
        .await
        .expect("second");
    assert_eq!(first.lead_id, second.lead_id);
    assert_eq!(first.operator.as_ref().map(|o| o.id), Some(a));
    assert!(second.operator.is_none(), "operator was full");
    let closed = t.store.close_contact(first.id).await.expect("close");
    assert_eq!(closed.status, ContactStatus::Closed);
    assert!(closed.closed_at.is_some());
    // The freed place went to the waiting contact, of the other source A serves.
    let drained = t.store.get_contact(second.id).await.expect("second");
    assert_eq!(drained.operator.map(|o| o.id), Some(a));
    let third = t
        .store
        .register_contact(contact("other", SourceRef::Id(s1)))
        .await
        .expect("third");
    assert_eq!(third.operator.map(|o| o.id), None, "a is full again");
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

async fn manual_assignment_moves_the_load(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let b = operator(&t.store, "B", 1).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let c = t
        .store
        .register_contact(contact("x", SourceRef::Id(s)))
        .await
        .expect("register");
    assert_eq!(c.operator.as_ref().map(|o| o.id), Some(a));
    let moved = t.store.assign_contact(c.id, b).await.expect("assign");
    assert_eq!(moved.operator.map(|o| o.id), Some(b));
    let again = t.store.assign_contact(c.id, b).await.expect("no-op");
    assert_eq!(again.operator.map(|o| o.id), Some(b));
    let d = t
        .store
        .register_contact(contact("y", SourceRef::Id(s)))
        .await
        .expect("register");
    assert_eq!(d.operator.as_ref().map(|o| o.id), Some(a), "a was released");
    let full = t
        .store
        .assign_contact(d.id, b)
        .await
        .expect_err("b is full");
    assert!(matches!(full, StoreError::OperatorAtCapacity), "{full:?}");
    let missing = t
        .store
        .assign_contact(d.id, OperatorId(999))
        .await
        .expect_err("unknown operator");
    assert!(
        matches!(missing, StoreError::UnknownOperator { .. }),
        "{missing:?}"
    );
    t.store.close_contact(d.id).await.expect("close");
    let closed = t.store.assign_contact(d.id, b).await.expect_err("closed");
    assert!(matches!(closed, StoreError::ContactClosed), "{closed:?}");
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// Each write between two registrations changes who may get the next contact; the next
/// registration must see it (the SQLite writer keeps candidates in memory between
/// registrations, and must forget them on every other write).
async fn registrations_see_every_change_made_between_them(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 10).await;
    let b = operator(&t.store, "B", 10).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let by_code = || SourceRef::Code(SourceCode::parse("src").expect("code"));
    let assigned = |c: &crm_core::Contact| c.operator.as_ref().map(|o| o.id);

    let first = register(&t.store, "l1", by_code()).await;
    assert_eq!(assigned(&first), Some(a));

    let off = crm_core::OperatorPatch {
        is_active: Some(false),
        ..Default::default()
    };
    t.store.update_operator(a, off).await.expect("deactivate");
    let l2 = register(&t.store, "l2", by_code()).await;
    assert_eq!(assigned(&l2), None, "a is off");

    let on_and_full = crm_core::OperatorPatch {
        is_active: Some(true),
        max_active_contacts: Some(MaxActiveContacts::new(1).expect("max")),
        ..Default::default()
    };
    t.store
        .update_operator(a, on_and_full)
        .await
        .expect("limit");
    let l3 = register(&t.store, "l3", by_code()).await;
    assert_eq!(assigned(&l3), None, "a is full");

    // The freed place goes to the oldest waiting contact; the next one waits behind l3.
    t.store.close_contact(first.id).await.expect("close");
    let l2 = t.store.get_contact(l2.id).await.expect("l2");
    assert_eq!(assigned(&l2), Some(a), "closing freed a place for l2");
    let l4 = register(&t.store, "l4", SourceRef::Id(s)).await;
    assert_eq!(assigned(&l4), None, "behind l3");

    let only_b = WeightSet::new(vec![WeightEntry {
        operator_id: b,
        weight: Weight::new(1).expect("weight"),
    }])
    .expect("weights");
    t.store.replace_weights(s, only_b).await.expect("weights");
    for waiting in [l3.id, l4.id] {
        let drained = t.store.get_contact(waiting).await.expect("drained");
        assert_eq!(
            assigned(&drained),
            Some(b),
            "the new weights drained {waiting}"
        );
    }
    assert_eq!(
        assigned(&register(&t.store, "l5", by_code()).await),
        Some(b),
        "new weights"
    );

    // A failed registration (its key was used for another request) is rolled back with
    // all it did; the next registrations carry on from the stored state.
    let key = |body: &str| IdempotencyKey::new("test", "k1", body).expect("key");
    t.store
        .register_contact_once(contact("l6", SourceRef::Id(s)), key("one"))
        .await
        .expect("keyed");
    let reused = t
        .store
        .register_contact_once(contact("l7", SourceRef::Id(s)), key("two"))
        .await
        .expect_err("reused key");
    assert!(
        matches!(reused, StoreError::IdempotencyKeyReused),
        "{reused:?}"
    );

    let renamed = crm_core::SourcePatch {
        code: Some(SourceCode::parse("renamed").expect("code")),
        ..Default::default()
    };
    t.store.update_source(s, renamed).await.expect("rename");
    let gone = t
        .store
        .register_contact(contact("l8", by_code()))
        .await
        .expect_err("old code");
    assert!(
        matches!(gone, StoreError::NotFound(Entity::Source)),
        "{gone:?}"
    );
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_sqlite_file() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let config = StoreConfig {
        database_url: db.database_url(),
        ..StoreConfig::default()
    };
    let first = crm_store::connect(&config).await.expect("first");
    let second = crm_store::connect(&config).await;
    assert!(matches!(second, Err(crm_store::ConnectError::InUse(_))));
    first.shutdown().await;
}

/// The writer turns SQLite's automatic checkpoint off and leaves checkpoints to its
/// checkpointer thread: once the WAL passes 4,000 pages (16 MiB, `NUDGE_FRAMES`), the
/// pages must reach the database file while the server runs, not only at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkpointer_copies_the_wal_into_the_database_file() {
    let t = store(Backend::Sqlite).await;
    let path =
        t.db.url
            .trim_start_matches("sqlite://")
            .trim_end_matches("?mode=rwc")
            .to_owned();
    let file_len = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let a = operator(&t.store, "A", 1_000).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let before = file_len();
    let big = serde_json::json!({ "text": "x".repeat(50_000) });
    for i in 0..480 {
        let mut new = contact(&format!("lead-{i}"), SourceRef::Id(s));
        new.payload = Payload::from_value(&big).expect("payload");
        t.store.register_contact(new).await.expect("register");
    }
    // 480 × 50 kB is ~24 MB of WAL; the checkpointer copies it in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while file_len() < before + 12_000_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        file_len() >= before + 12_000_000,
        "the database file stayed at {} bytes (was {before})",
        file_len()
    );
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

async fn an_idempotency_key_replays_and_refuses_reuse(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let src = source(&t.store, "src", &[(a, 1)]).await;
    let key = IdempotencyKey::new("admin", "key-1", "fingerprint-1").expect("key");
    let first = t
        .store
        .register_contact_once(contact("x", SourceRef::Id(src)), key.clone())
        .await
        .expect("first");
    assert!(!first.replayed);
    assert_eq!(first.contact.operator.as_ref().map(|o| o.id), Some(a));
    // Closing it changes the contact, not the answer a retry gets.
    t.store
        .close_contact(first.contact.id)
        .await
        .expect("close");
    let again = t
        .store
        .register_contact_once(contact("x", SourceRef::Id(src)), key.clone())
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.contact, first.contact);
    let reused = IdempotencyKey::new("admin", "key-1", "fingerprint-2").expect("key");
    let err = t
        .store
        .register_contact_once(contact("x", SourceRef::Id(src)), reused)
        .await
        .expect_err("reused");
    assert!(matches!(err, StoreError::IdempotencyKeyReused), "{err:?}");
    // A failed registration does not keep its key: the same key works once the source exists.
    let ghost = IdempotencyKey::new("admin", "key-2", "fingerprint-3").expect("key");
    let missing = t
        .store
        .register_contact_once(
            contact(
                "y",
                SourceRef::Code(SourceCode::parse("nope").expect("code")),
            ),
            ghost.clone(),
        )
        .await
        .expect_err("unknown source");
    assert!(matches!(missing, StoreError::NotFound(Entity::Source)));
    let ok = t
        .store
        .register_contact_once(contact("y", SourceRef::Id(src)), ghost)
        .await
        .expect("the key was not taken by the failed attempt");
    assert!(!ok.replayed);
    assert_eq!(all_contacts(&t.store).await.len(), 2);
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

async fn concurrent_requests_with_one_key_store_one_contact(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 100).await;
    let src = source(&t.store, "src", &[(a, 1)]).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&t.store);
        tasks.push(tokio::spawn(async move {
            let key = IdempotencyKey::new("admin", "same", "same-body").expect("key");
            store
                .register_contact_once(contact("lead", SourceRef::Id(src)), key)
                .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task").expect("registration"));
    }
    assert_eq!(answers.iter().filter(|r| !r.replayed).count(), 1);
    let first = &answers
        .iter()
        .find(|r| !r.replayed)
        .expect("one original")
        .contact;
    assert!(answers.iter().all(|r| &r.contact == first));
    assert_eq!(all_contacts(&t.store).await.len(), 1);
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// Writes refused for the client's mistake fail before they change a row. On the SQLite
/// writer a write that fails after writing makes its whole group (up to 256 writes) run
/// again with a savepoint each (see `sqlite::writer`); one bad request must not cost its
/// neighbours that. The writer counts such reruns; none may happen here. (PostgreSQL has
/// no such count: there the test checks the refusals and that nothing of them stayed.)
async fn refused_writes_fail_before_writing(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let b = operator(&t.store, "B", 1).await;
    let c = operator(&t.store, "C", 1).await;
    let s = source(&t.store, "src", &[(b, 1)]).await;
    let on_a = source(&t.store, "on-a", &[(a, 1)]).await;
    let on_c = source(&t.store, "on-c", &[(c, 1)]).await;
    let x = register(&t.store, "x", SourceRef::Id(s)).await;
    assert_eq!(x.operator.as_ref().map(|o| o.id), Some(b));
    register(&t.store, "y", SourceRef::Id(on_a)).await;
    register(&t.store, "z", SourceRef::Id(on_c)).await;
    let closed = register(&t.store, "w", SourceRef::Id(on_c)).await;
    t.store.close_contact(closed.id).await.expect("close");
    let key = IdempotencyKey::new("admin", "k", "f").expect("key");
    t.store
        .register_contact_once(contact("v", SourceRef::Id(s)), key)
        .await
        .expect("keyed registration");

    let refusals = [
        // Operators full on either side of B: a lower id is claimed before B is
        // released, a higher one after.
        (
            "to a full operator with a lower id",
            t.store.assign_contact(x.id, a).await.map(drop),
        ),
        (
            "to a full operator with a higher id",
            t.store.assign_contact(x.id, c).await.map(drop),
        ),
        (
            "to an unknown operator",
            t.store
                .assign_contact(x.id, OperatorId(999))
                .await
                .map(drop),
        ),
        (
            "a closed contact",
            t.store.assign_contact(closed.id, a).await.map(drop),
        ),
        (
            "an unknown contact",
            t.store
                .assign_contact(crm_core::ContactId(999), a)
                .await
                .map(drop),
        ),
        (
            "weights naming an unknown operator",
            t.store
                .replace_weights(
                    s,
                    WeightSet::new(vec![
                        WeightEntry {
                            operator_id: a,
                            weight: Weight::new(1).expect("weight"),
                        },
                        WeightEntry {
                            operator_id: OperatorId(999),
                            weight: Weight::new(1).expect("weight"),
                        },
                    ])
                    .expect("weights"),
                )
                .await
                .map(drop),
        ),
        (
            "weights of an unknown source",
            t.store
                .replace_weights(SourceId(999), WeightSet::new(vec![]).expect("weights"))
                .await
                .map(drop),
        ),
        (
            "a keyed registration naming an unknown source",
            t.store
                .register_contact_once(
                    contact("u", SourceRef::Id(SourceId(999))),
                    IdempotencyKey::new("admin", "k2", "f").expect("key"),
                )
                .await
                .map(drop),
        ),
        (
            "a key reused with another request",
            t.store
                .register_contact_once(
                    contact("u", SourceRef::Id(s)),
                    IdempotencyKey::new("admin", "k", "other").expect("key"),
                )
                .await
                .map(drop),
        ),
    ];
    let expected: [fn(&StoreError) -> bool; 9] = [
        |e| matches!(e, StoreError::OperatorAtCapacity),
        |e| matches!(e, StoreError::OperatorAtCapacity),
        |e| matches!(e, StoreError::UnknownOperator { index: None, .. }),
        |e| matches!(e, StoreError::ContactClosed),
        |e| matches!(e, StoreError::NotFound(Entity::Contact)),
        |e| matches!(e, StoreError::UnknownOperator { index: Some(1), .. }),
        |e| matches!(e, StoreError::NotFound(Entity::Source)),
        |e| matches!(e, StoreError::NotFound(Entity::Source)),
        |e| matches!(e, StoreError::IdempotencyKeyReused),
    ];
    for ((what, result), expected) in refusals.into_iter().zip(expected) {
        match result {
            Err(err) => assert!(expected(&err), "{what}: {err:?}"),
            Ok(()) => panic!("{what} was accepted"),
        }
    }
    let pool = t.store.pool_status();
    match backend {
        Backend::Sqlite => assert_eq!(
            pool.write_group_reruns,
            Some(0),
            "a refused write wrote before failing"
        ),
        Backend::Postgres => assert_eq!(pool.write_group_reruns, None),
    }
    // And nothing of them stayed.
    let x_now = t.store.get_contact(x.id).await.expect("x");
    assert_eq!(x_now.operator.map(|o| o.id), Some(b));
    let weights = t.store.get_source(s).await.expect("source").operators;
    assert_eq!(weights.len(), 1, "{weights:?}");
    assert_eq!(weights[0].operator.id, b);
    assert_eq!(all_contacts(&t.store).await.len(), 5);
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// A key lives for [`IdempotencyKey::LIFETIME`] from its first use. Just inside it, the
/// key still belongs to its first request (a replay for it, a refusal for another); just
/// past it, the claim itself forgets the key, even before the hourly expiry removes it,
/// and the next request with it registers anew.
async fn an_expired_idempotency_key_is_taken_over(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 10).await;
    let src = source(&t.store, "src", &[(a, 1)]).await;
    // Every request here uses the key `k`; `fingerprint` tells the requests apart.
    let with_key = async |store: &DbStore, external: &str, fingerprint: &str| {
        store
            .register_contact_once(
                contact(external, SourceRef::Id(src)),
                IdempotencyKey::new("admin", "k", fingerprint).expect("key"),
            )
            .await
    };
    let first = with_key(&t.store, "x", "first").await.expect("first");
    let lifetime = chrono::Duration::from_std(IdempotencyKey::LIFETIME).expect("lifetime");
    let margin = chrono::Duration::minutes(1);

    let t = age_keys(t, chrono::Utc::now() - lifetime + margin).await;
    let replay = with_key(&t.store, "x", "first")
        .await
        .expect("a replay just inside the lifetime");
    assert!(replay.replayed);
    assert_eq!(replay.contact, first.contact);
    let refused = with_key(&t.store, "y", "second")
        .await
        .expect_err("the key still belongs to the first request");
    assert!(
        matches!(refused, StoreError::IdempotencyKeyReused),
        "{refused:?}"
    );

    let t = age_keys(t, chrono::Utc::now() - lifetime - margin).await;
    // Another request with the expired key is not refused as a reuse.
    let second = with_key(&t.store, "y", "second")
        .await
        .expect("the expired key is taken over");
    assert!(!second.replayed);
    assert_ne!(second.contact.id, first.contact.id);
    // From now on the key answers for the second request.
    let again = with_key(&t.store, "y", "second").await.expect("replay");
    assert!(again.replayed);
    assert_eq!(again.contact, second.contact);
    let reused = with_key(&t.store, "x", "first")
        .await
        .expect_err("the first request's fingerprint no longer owns the key");
    assert!(
        matches!(reused, StoreError::IdempotencyKeyReused),
        "{reused:?}"
    );
    assert_eq!(all_contacts(&t.store).await.len(), 2);
    t.finish().await;
}

/// Every kind of write that locks more than one row, at once, on few shared rows:
/// registrations with and without a key for three returning leads, closes, manual
/// assignments and weight replacements, over two operators and two sources. Writes lock
/// rows in one order (docs/architecture.md), so none may fail for anything but the rule
/// (a full operator, a closed contact): a deadlock PostgreSQL breaks would surface as
/// `Unavailable`, anything else as `Internal`.
async fn mixed_writes_on_shared_rows_never_deadlock(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 3).await;
    let b = operator(&t.store, "B", 3).await;
    let s = source(&t.store, "s", &[(a, 1), (b, 1)]).await;
    let u = source(&t.store, "u", &[(a, 1), (b, 2)]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8_usize {
        let store = Arc::clone(&t.store);
        tasks.spawn(async move {
            for i in 0..40_usize {
                let lead = format!("lead-{}", i % 3);
                let result = match (task + i) % 5 {
                    0 => store
                        .register_contact(contact(&lead, SourceRef::Id(s)))
                        .await
                        .map(drop),
                    1 => store
                        .register_contact_once(
                            contact(&lead, SourceRef::Id(u)),
                            IdempotencyKey::new("admin", &format!("k-{task}-{i}"), "fp")
                                .expect("key"),
                        )
                        .await
                        .map(drop),
                    2 | 3 => {
                        let open = contacts(&store, Some(ContactStatus::Open), 5).await;
                        match open.get(i % 5) {
                            Some(c) if (task + i) % 5 == 2 => {
                                store.close_contact(c.id).await.map(drop)
                            }
                            Some(c) => store
                                .assign_contact(c.id, if i % 2 == 0 { a } else { b })
                                .await
                                .map(drop),
                            None => Ok(()),
                        }
                    }
                    _ => {
                        let set = WeightSet::new(vec![
                            WeightEntry {
                                operator_id: a,
                                weight: Weight::new(1 + (i % 3) as i64).expect("weight"),
                            },
                            WeightEntry {
                                operator_id: b,
                                weight: Weight::new(1).expect("weight"),
                            },
                        ])
                        .expect("weights");
                        store.replace_weights(s, set).await.map(drop)
                    }
                };
                match result {
                    Ok(()) | Err(StoreError::OperatorAtCapacity | StoreError::ContactClosed) => {}
                    Err(err) => panic!("task {task}, step {i}: {err:?}"),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task panicked");
    }
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// The stored decision names the candidates in operator order, whatever order the weights
/// were given in: that order lays out the draw's slices, so a record read back (and a
/// seeded replay) means the same on both backends.
async fn the_decision_lists_candidates_in_operator_order(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 10).await;
    let b = operator(&t.store, "B", 10).await;
    let c = operator(&t.store, "C", 10).await;
    let s = source(&t.store, "mixed", &[(c, 3), (a, 1), (b, 2)]).await;
    let plain = t
        .store
        .register_contact(contact("plain", SourceRef::Id(s)))
        .await
        .expect("register");
    let keyed = t
        .store
        .register_contact_once(
            contact("keyed", SourceRef::Id(s)),
            IdempotencyKey::new("test", "order-1", "body").expect("key"),
        )
        .await
        .expect("register with a key");
    for (id, operator) in [
        (plain.id, plain.operator.map(|o| o.id)),
        (keyed.contact.id, keyed.contact.operator.map(|o| o.id)),
    ] {
        let history = t.store.contact_decisions(id).await.expect("history");
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].path, crm_core::DecisionPath::Registered);
        assert_eq!(history[0].operator_id, operator);
        let record = history[0].record.as_deref().expect("a record");
        let decision = crm_core::Decision::from_record(record).expect("a version 2 record");
        let ids: Vec<OperatorId> = decision
            .candidates
            .iter()
            .map(|v| v.candidate.operator_id)
            .collect();
        assert_eq!(ids, vec![a, b, c], "{record}");
        assert_eq!(
            decision.replay(),
            operator,
            "the draw replays to the operator"
        );
    }
    t.finish().await;
}

/// Sets the first use of every idempotency key to `at`, behind the store's back (with
/// the store closed), and opens the store again.
async fn age_keys(t: TestStore, at: chrono::DateTime<chrono::Utc>) -> TestStore {
    t.store.shutdown().await;
    let TestStore { store, db } = t;
    drop(store);
    let raw = sea_orm::Database::connect(&db.url).await.expect("connect");
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    sea_orm::ConnectionTrait::execute_unprepared(
        &raw,
        &format!("UPDATE idempotency_keys SET created_at = '{at}'"),
    )
    .await
    .expect("age the keys");
    raw.close().await.expect("close");
    open(db).await
}

async fn source_keys_are_stored_as_hashes_listed_and_revoked(backend: Backend) {
    let t = store(backend).await;
    let src = source(&t.store, "bot", &[]).await;
    let other = source(&t.store, "other", &[]).await;
    let new = |source_id, hash: &str| NewSourceKey {
        source_id,
        label: Some(Name::parse("prod bot").expect("label")),
        prefix: "crm_sk_ab".to_owned(),
        hash: hash.to_owned(),
    };
    let key = t
        .store
        .create_source_key(new(src, "h1"))
        .await
        .expect("key");
    assert_eq!(key.source_id, src);
    assert_eq!(key.label.as_deref(), Some("prod bot"));
    assert!(key.last_used_at.is_none());
    let missing = t
        .store
        .create_source_key(new(SourceId(999), "h2"))
        .await
        .expect_err("unknown source");
    assert!(matches!(missing, StoreError::NotFound(Entity::Source)));

    let found = t
        .store
        .authenticate_source_key("h1")
        .await
        .expect("lookup")
        .expect("known hash");
    assert_eq!(found.id, key.id);
    assert!(
        t.store
            .authenticate_source_key("nope")
            .await
            .expect("lookup")
            .is_none()
    );
    let listed = t.store.list_source_keys(src).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some(), "use was recorded");
    assert!(
        t.store
            .list_source_keys(other)
            .await
            .expect("list")
            .is_empty()
    );

    let wrong = t
        .store
        .delete_source_key(other, key.id)
        .await
        .expect_err("another source's key");
    assert!(matches!(wrong, StoreError::NotFound(_)));
    t.store
        .delete_source_key(src, key.id)
        .await
        .expect("revoke");
    assert!(
        t.store
            .authenticate_source_key("h1")
            .await
            .expect("lookup")
            .is_none()
    );
    let gone = t
        .store
        .delete_source_key(src, SourceKeyId(key.id.get()))
        .await
        .expect_err("already revoked");
    assert!(matches!(gone, StoreError::NotFound(_)));
    t.finish().await;
}

/// What a metrics scrape reads, the operators' counters and the unassigned backlog per
/// source, follows registrations, manual assignments and closings.
async fn the_scrape_figures_follow_every_write(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let b = operator(&t.store, "B", 2).await;
    let s1 = source(&t.store, "one", &[(a, 1)]).await;
    let s2 = source(&t.store, "two", &[(a, 1)]).await;
    let x = register(&t.store, "x", SourceRef::Id(s1)).await;
    assert_eq!(x.operator.as_ref().map(|o| o.id), Some(a));
    let y = register(&t.store, "y", SourceRef::Id(s1)).await;
    register(&t.store, "z", SourceRef::Id(s2)).await;
    let w = register(&t.store, "w", SourceRef::Id(s2)).await;
    assert!(y.operator.is_none() && w.operator.is_none(), "a is full");
    let loads = |a_open: i64, b_open: i64| {
        vec![
            crm_core::OperatorLoad {
                operator_id: a,
                max_active_contacts: MaxActiveContacts::new(1).expect("limit"),
                open_contacts: a_open,
            },
            crm_core::OperatorLoad {
                operator_id: b,
                max_active_contacts: MaxActiveContacts::new(2).expect("limit"),
                open_contacts: b_open,
            },
        ]
    };
    let figures = || async {
        (
            t.store.operator_loads().await.expect("loads"),
            t.store
                .queue(None)
                .await
                .expect("queue")
                .into_iter()
                .map(|q| (q.source_id, q.waiting))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(figures().await, (loads(1, 0), vec![(s1, 1), (s2, 2)]));
    t.store.assign_contact(w.id, b).await.expect("assign");
    assert_eq!(figures().await, (loads(1, 1), vec![(s1, 1), (s2, 1)]));
    t.store.close_contact(y.id).await.expect("close");
    // The place x frees goes to z, waiting on the other source a serves.
    t.store.close_contact(x.id).await.expect("close");
    assert_eq!(figures().await, (loads(1, 1), vec![]));
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// A scrape counts the waiting queue from the partial index that holds only the queue,
/// never from the contacts table: SQLite's plan for the query searches that index alone
/// (covering) and needs no sort for its `GROUP BY`; only the oldest contact of each source
/// is read from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_backlog_is_counted_from_its_index_alone() {
    let t = store(Backend::Sqlite).await;
    t.store.shutdown().await;
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &raw,
        sea_orm::Statement::from_string(
            raw.get_database_backend(),
            format!("EXPLAIN QUERY PLAN {}", crm_store::testing::QUEUE_SQL),
        ),
    )
    .await
    .expect("explain");
    raw.close().await.expect("close");
    let plan: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("", "detail").expect("detail"))
        .collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("USING COVERING INDEX ix_contacts_queue")),
        "{plan:?}"
    );
    assert!(
        plan.iter()
            .all(|step| !step.contains("TEMP B-TREE")
                && !step.contains("ix_contacts_operator_status")),
        "{plan:?}"
    );
    t.finish().await;
}

/// A sticky source's owner is found through the lead's own contacts: SQLite's plan for the
/// query searches `ix_contacts_lead`, never `ix_contacts_source` (which it preferred before
/// the `+` and then walked the whole source: a tenth of the registration rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sticky_owner_is_read_through_the_lead_index() {
    let t = store(Backend::Sqlite).await;
    t.store.shutdown().await;
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &raw,
        sea_orm::Statement::from_string(
            raw.get_database_backend(),
            format!(
                "EXPLAIN QUERY PLAN {}",
                crm_store::testing::LATEST_OWNER
                    .replace("$1", "1")
                    .replace("$2", "1")
            ),
        ),
    )
    .await
    .expect("explain");
    raw.close().await.expect("close");
    let plan: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("", "detail").expect("detail"))
        .collect();
    assert!(
        plan.iter().any(|step| step.contains("ix_contacts_lead"))
            && plan.iter().all(|step| !step.contains("ix_contacts_source")),
        "{plan:?}"
    );
    t.finish().await;
}
