//! The outbox: every write that changes something stores its event in the same unit of
//! work, in commit order, with the state after the change; a write that fails or changes
//! nothing stores none; retention prunes the old ones and says how far; on PostgreSQL a
//! reader never passes an event that commits after a later number is visible.

mod support;

use chrono::Utc;
use crm_core::{
    ContactStatus, Event, EventCursor, EventType, NewOperator, OperatorPatch, SourcePatch,
    SourceRef, Store, StoreError, WeightSet,
};
use crm_store::testing::Backend;
use serde_json::{Value, json};
use support::*;

crm_store::on_every_backend!(
    every_change_has_its_event_in_order,
    a_failed_or_empty_write_stores_no_event,
    retention_prunes_the_oldest_and_moves_its_mark,
);

/// The whole outbox, read three at a time.
async fn all_events(store: &crm_store::DbStore) -> Vec<Event> {
    crm_store::testing::events_after(store, 0, 3).await
}

/// Reads from `cursor` until `n` events came (or 10 s passed), then once more: what a
/// reader delivered.
#[cfg(feature = "postgres-tests")]
async fn read_until(store: &crm_store::DbStore, mut cursor: EventCursor, n: usize) -> Vec<Event> {
    let mut delivered = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while delivered.len() < n && std::time::Instant::now() < deadline {
        let (next, page) = store.read_events(cursor, 1000).await.expect("read");
        cursor = next;
        delivered.extend(page.events);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (_, page) = store.read_events(cursor, 1000).await.expect("read");
    delivered.extend(page.events);
    delivered
}

fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).expect("data is JSON")
}

async fn every_change_has_its_event_in_order(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let b = operator(&t.store, "B", 1).await;
    let s = source(&t.store, "bot", &[(a, 1)]).await;
    let first = register(&t.store, "lead-1", SourceRef::Id(s)).await;
    let waiting = register(&t.store, "lead-2", SourceRef::Id(s)).await;
    assert_eq!(waiting.operator, None);
    // Closing the first frees A, and the drain gives it the waiting one.
    t.store.close_contact(first.id).await.expect("close");
    t.store.assign_contact(waiting.id, b).await.expect("assign");
    t.store
        .unassign_contact(waiting.id)
        .await
        .expect("unassign");
    let patch = OperatorPatch {
        is_active: Some(false),
        ..OperatorPatch::default()
    };
    t.store.update_operator(b, patch).await.expect("update");
    let patch = SourcePatch {
        name: Some(crm_core::Name::parse("Bot two").expect("name")),
        ..SourcePatch::default()
    };
    t.store.update_source(s, patch).await.expect("update");
    let spare = operator(&t.store, "spare", 1).await;
    t.store.delete_operator(spare).await.expect("delete");

    let events = all_events(&t.store).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "operator.created",
            "operator.created",
            "source.created",
            "source.weights_replaced",
            "contact.created",
            "contact.created",
            "contact.closed",
            "contact.assigned",
            "contact.assigned",
            "contact.unassigned",
            "contact.assigned",
            "operator.updated",
            "source.updated",
            "operator.created",
            "operator.deleted",
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let (c1, c2) = (first.id.get(), waiting.id.get());
    let (a, b, s) = (a.get(), b.get(), s.get());
    let contact = |i: usize| {
        let mut d = data(&events[i]);
        d["decision"] = d["decision"]["path"].clone();
        d
    };
    let state = |id, operator: Option<i64>, status: &str, path: Value| json!({"contact_id": id, "source_id": s, "operator_id": operator, "status": status, "decision": path});
    assert_eq!(contact(4), state(c1, Some(a), "open", json!("registered")));
    assert_eq!(contact(5), state(c2, None, "open", json!("queued")));
    assert_eq!(contact(6), state(c1, Some(a), "closed", Value::Null));
    assert_eq!(contact(7), state(c2, Some(a), "open", json!("drained")));
    assert_eq!(contact(8), state(c2, Some(b), "open", json!("manual")));
    assert_eq!(contact(9), state(c2, None, "open", json!("unassigned")));
    // The drain after the unassign passes B over, and A is free again.
    assert_eq!(contact(10), state(c2, Some(a), "open", json!("drained")));
    let summary = data(&events[4])["decision"]["summary"].clone();
    assert!(
        summary.as_str().is_some_and(|s| s.contains("eligible")),
        "{summary}"
    );
    assert_eq!(
        data(&events[0]),
        json!({"operator_id": a, "name": "A", "is_active": true, "max_active_contacts": 1,
               "max_assignments_per_minute": null})
    );
    assert_eq!(
        data(&events[3]),
        json!({"source_id": s, "operators": [{"operator_id": a, "weight": 1}]})
    );
    assert_eq!(data(&events[11])["is_active"], json!(false));
    assert_eq!(data(&events[12])["name"], json!("Bot two"));
    assert_eq!(data(&events[12])["strategy"], json!("weighted_random"));
    assert_eq!(data(&events[14]), json!({"operator_id": spare.get()}));
    // A page between two numbers a reader passed reads the same events.
    let page = t
        .store
        .events_between(events[3].seq, events[6].seq, 100)
        .await
        .expect("between");
    assert_eq!(page.events, events[4..=6]);
    assert_eq!(page.pruned_through, 0);
    assert_eq!(
        t.store.get_contact(waiting.id).await.expect("read").status,
        ContactStatus::Open
    );
    t.finish().await;
}

async fn a_failed_or_empty_write_stores_no_event(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s = source(&t.store, "bot", &[(a, 2)]).await;
    let c = register(&t.store, "lead-1", SourceRef::Id(s)).await;
    let before = all_events(&t.store).await.len();
    // Refused: the contact exists, the operator does not; the source code is taken.
    let missing = crm_core::OperatorId(999);
    assert!(matches!(
        t.store.assign_contact(c.id, missing).await,
        Err(StoreError::UnknownOperator { .. })
    ));
    let taken = crm_core::NewSource {
        name: crm_core::Name::parse("again").expect("name"),
        code: crm_core::SourceCode::parse("bot").expect("code"),
        rule: crm_core::SourceRule::default(),
    };
    assert!(matches!(
        t.store.create_source(taken).await,
        Err(StoreError::SourceCodeTaken)
    ));
    assert!(matches!(
        t.store.delete_operator(a).await,
        Err(StoreError::OperatorHasContacts)
    ));
    // Changes nothing: the same weights again, the same operator again, a second close.
    let same = WeightSet::new(vec![crm_core::WeightEntry {
        operator_id: a,
        weight: crm_core::Weight::new(2).expect("weight"),
    }])
    .expect("weights");
    t.store
        .replace_weights(s, same)
        .await
        .expect("same weights");
    t.store
        .assign_contact(c.id, a)
        .await
        .expect("same operator");
    t.store.close_contact(c.id).await.expect("close");
    t.store.close_contact(c.id).await.expect("close again");
    let events = all_events(&t.store).await;
    let kinds: Vec<EventType> = events[before..].iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::ContactClosed]);
    let unused = NewOperator {
        name: crm_core::Name::parse("unused").expect("name"),
        is_active: true,
        max_active_contacts: crm_core::MaxActiveContacts::new(1).expect("max"),
        max_assignments_per_minute: None,
    };
    t.store.create_operator(unused).await.expect("create");
    assert_eq!(all_events(&t.store).await.len(), events.len() + 1);
    t.finish().await;
}

async fn retention_prunes_the_oldest_and_moves_its_mark(backend: Backend) {
    let t = store(backend).await;
    for i in 0..6 {
        operator(&t.store, &format!("op{i}"), 1).await;
    }
    let events = all_events(&t.store).await;
    assert_eq!(events.len(), 6);
    // Nothing is old enough yet.
    let past = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(t.store.prune_events(past, 0, 100).await.expect("prune"), 0);
    // Everything is, but the newest four are kept; then two at a time.
    let future = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(t.store.prune_events(future, 4, 1).await.expect("prune"), 1);
    assert_eq!(t.store.prune_events(future, 4, 10).await.expect("prune"), 1);
    assert_eq!(t.store.prune_events(future, 4, 10).await.expect("prune"), 0);
    let (cursor, page) = t
        .store
        .read_events(EventCursor::default(), 100)
        .await
        .expect("read");
    assert_eq!(page.pruned_through, events[1].seq);
    assert_eq!(page.events, events[2..]);
    assert_eq!(cursor.after, events[5].seq);
    t.finish().await;
}

/// SQLite's writer keeps the newest committed events in memory for the outbox's readers:
/// they are the table's rows, under concurrent writes, writes that fail, retention, and
/// after a restart (when the memory starts empty and older positions read the table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_memory_of_events_is_the_table() {
    let t = store(Backend::Sqlite).await;
    let a = operator(&t.store, "A", 1_000).await;
    let s = source(&t.store, "bot", &[(a, 1)]).await;
    let before = crm_store::testing::stored_events(&t.store, 0).await.len();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = std::sync::Arc::clone(&t.store);
        tasks.push(tokio::spawn(async move {
            let c = register(&store, &format!("lead-{}", i % 50), SourceRef::Id(s)).await;
            if i % 3 == 0 {
                store.close_contact(c.id).await.expect("close");
            }
            // Refused, after the contact was read: no event.
            let missing = crm_core::OperatorId(999);
            assert!(store.assign_contact(c.id, missing).await.is_err());
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let stored = crm_store::testing::stored_events(&t.store, 0).await;
    assert_eq!(stored.len(), before + 200 + 67);
    // All of it from memory (the writer started on an empty outbox), and equal to the table.
    assert!(crm_store::testing::answered_from_memory(&t.store, 0));
    assert_eq!(
        crm_store::testing::events_after(&*t.store, 0, 7).await,
        stored
    );
    assert_eq!(
        t.store.settled_event_head().await.expect("head"),
        stored[stored.len() - 1].seq
    );
    let middle = stored[100].seq;
    let page = t
        .store
        .events_between(middle, stored[120].seq, 1000)
        .await
        .expect("page");
    assert_eq!(page.events, stored[101..=120]);

    // Retention: a reader from before the mark is told, from the table.
    let future = Utc::now() + chrono::Duration::hours(1);
    t.store
        .prune_events(future, 100, 1000)
        .await
        .expect("prune");
    let (_, page) = t
        .store
        .read_events(EventCursor::at(middle), 1000)
        .await
        .expect("read");
    assert!(page.pruned_through > middle, "{}", page.pruned_through);
    let mark = page.pruned_through;
    memory_starts_at(&t.store, mark, mark).await;
    let kept = crm_store::testing::stored_events(&t.store, 0).await;
    assert_eq!(kept.len(), 100);
    assert_eq!(
        crm_store::testing::events_after(&*t.store, 0, 7).await,
        kept
    );

    // After a restart the memory starts from the newest event.
    t.store.shutdown().await;
    let TestStore { store, db } = t;
    drop(store);
    let t = open(db).await;
    register(&t.store, "after-restart", SourceRef::Id(s)).await;
    let stored = crm_store::testing::stored_events(&t.store, 0).await;
    assert_eq!(stored.len(), 101);
    let newest = stored[99].seq;
    // The mark, read when the writer started again.
    memory_starts_at(&t.store, newest, mark).await;
    assert_eq!(
        crm_store::testing::events_after(&*t.store, 0, 7).await,
        stored
    );
    assert_eq!(
        crm_store::testing::events_after(&*t.store, newest, 7).await,
        stored[100..]
    );
    t.finish().await;
}

/// Reads after `start` come from the writer's memory, those after `start - 1` from the
/// table; from memory, retention's `mark` is the table's, beside the events.
async fn memory_starts_at(store: &crm_store::DbStore, start: u64, mark: u64) {
    assert!(!crm_store::testing::answered_from_memory(store, start - 1));
    assert!(crm_store::testing::answered_from_memory(store, start));
    let page = store
        .events_between(start, u64::MAX, 10)
        .await
        .expect("page");
    assert_eq!(page.pruned_through, mark);
}

/// A unit of work that took a number and has not committed holds the reader before it,
/// although a later number is visible; once it commits, both come in order; a number
/// rolled back is passed once its holder has ended.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waits_for_a_gap_that_may_still_be_filled() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let t = store(Backend::Postgres).await;
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    let insert = "INSERT INTO events (type, at, data) VALUES ('operator.deleted', now(), '{}')";
    for commit in [true, false] {
        let (start, _) = t
            .store
            .read_events(EventCursor::default(), 1000)
            .await
            .expect("read");
        let held = raw.begin().await.expect("begin");
        held.execute_unprepared(insert)
            .await
            .expect("take a number");
        let later = operator(&t.store, "later", 1).await;
        let (cursor, page) = t.store.read_events(start, 1000).await.expect("read");
        assert!(page.events.is_empty(), "passed a gap that may be filled");
        assert_eq!(cursor.after, start.after);
        if commit {
            held.commit().await.expect("commit");
        } else {
            held.rollback().await.expect("rollback");
        }
        // A rolled-back gap is passed once a snapshot shows its holder ended (other
        // tests' transactions on the cluster may hold `xmin` back a moment longer).
        let expected = if commit { 2 } else { 1 };
        let delivered = read_until(&t.store, cursor, expected).await;
        assert_eq!(delivered.len(), expected, "{delivered:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&delivered[expected - 1].data).expect("json")["operator_id"],
            json!(later.get())
        );
        assert!(delivered.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }
    raw.close().await.expect("close");
    t.finish().await;
}

/// Sixteen tasks write at once (registrations, which commit in one statement, and
/// operator changes in transactions) while a reader polls: it delivers exactly the
/// outbox, in order, each event once.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_polling_reader_delivers_every_concurrent_event_once() {
    let t = store(Backend::Postgres).await;
    let mut weights = Vec::new();
    for i in 0..4 {
        weights.push((operator(&t.store, &format!("op{i}"), 1_000).await, 1));
    }
    let s = source(&t.store, "bot", &weights).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = std::sync::Arc::clone(&t.store);
        let done = std::sync::Arc::clone(&done);
        tokio::spawn(async move {
            let (mut cursor, mut delivered) = (EventCursor::default(), Vec::new());
            let mut idle = 0;
            while idle < 3 {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let (next, page) = store.read_events(cursor, 50).await.expect("read");
                cursor = next;
                idle = if finished && page.events.is_empty() {
                    idle + 1
                } else {
                    0
                };
                delivered.extend(page.events.into_iter().map(|e| e.seq));
            }
            delivered
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16 {
        let store = std::sync::Arc::clone(&t.store);
        let operators: Vec<_> = weights.iter().map(|w| w.0).collect();
        tasks.spawn(async move {
            for i in 0..40 {
                if i % 5 == 4 {
                    let patch = OperatorPatch {
                        is_active: Some(true),
                        ..OperatorPatch::default()
                    };
                    store
                        .update_operator(operators[(task + i) % 4], patch)
                        .await
                        .expect("update");
                } else {
                    let lead = format!("l{task}-{i}");
                    store
                        .register_contact(contact(&lead, SourceRef::Id(s)))
                        .await
                        .expect("register");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let delivered = reader.await.expect("reader");
    let all: Vec<u64> = all_events(&t.store).await.iter().map(|e| e.seq).collect();
    assert_eq!(all.len(), 4 + 2 + 16 * 40);
    assert_eq!(delivered, all);
    t.finish().await;
}

/// The holder of the missing number got its transaction id after the one that committed
/// the later number: PostgreSQL's snapshot then shows `xmin = xmax` above nothing running
/// (the newest finished transaction is below the holder), and a bound taken from `xmax`
/// would pass the gap for good. The reader waits for the holder, then delivers both.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_held_by_a_younger_transaction_is_not_passed() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let t = store(Backend::Postgres).await;
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    let insert = "INSERT INTO events (type, at, data) VALUES ('operator.deleted', now(), '{}')";
    let (start, _) = t
        .store
        .read_events(EventCursor::default(), 1000)
        .await
        .expect("read");
    let older = raw.begin().await.expect("begin");
    older
        .execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .expect("an id first");
    let younger = raw.begin().await.expect("begin");
    younger
        .execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .expect("an id second");
    younger.execute_unprepared(insert).await.expect("number 1");
    older.execute_unprepared(insert).await.expect("number 2");
    older.commit().await.expect("commit the later number");
    let mut cursor = start;
    for _ in 0..5 {
        let (next, page) = t.store.read_events(cursor, 1000).await.expect("read");
        assert!(
            page.events.is_empty(),
            "passed a gap a running transaction holds"
        );
        cursor = next;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    younger.commit().await.expect("commit");
    let delivered: Vec<u64> = read_until(&t.store, cursor, 2)
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(delivered, [start.after + 1, start.after + 2]);
    raw.close().await.expect("close");
    t.finish().await;
}

/// The webhook sender's claim of due retries, the scrape's count of pending deliveries and
/// retention's floor read only the deliveries still due. SQLite's plans search the partial
/// indexes of pending rows (migration 14), never the index of every delivery an endpoint
/// had: the claim did, several times a second, once deliveries piled up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_queries_read_only_the_deliveries_still_due() {
    let t = store(Backend::Sqlite).await;
    t.store.shutdown().await;
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    let claim = crm_store::testing::CLAIM_DUE
        .replace("$1", "'2026-12-06T00:00:00Z'")
        .replace("$2", "'2026-12-06T00:00:00Z'")
        .replace("$3", "1")
        .replace("$4", "32");
    for (name, sql, wanted) in [
        ("claim", claim.as_str(), "ix_webhook_deliveries_due"),
        (
            "backlog",
            crm_store::testing::WEBHOOK_BACKLOG,
            "ix_webhook_deliveries_due",
        ),
        (
            "floor",
            crm_store::testing::WEBHOOK_FLOOR,
            "ix_webhook_deliveries_pending_event",
        ),
    ] {
        let rows = sea_orm::ConnectionTrait::query_all_raw(
            &raw,
            sea_orm::Statement::from_string(
                raw.get_database_backend(),
                format!("EXPLAIN QUERY PLAN {sql}"),
            ),
        )
        .await
        .expect("explain");
        let plan: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("", "detail").expect("detail"))
            .collect();
        assert!(
            plan.iter().any(|step| step.contains(wanted))
                && plan
                    .iter()
                    .all(|step| !step.contains("ix_webhook_deliveries_webhook")
                        && !step.contains("TEMP B-TREE")),
            "{name}: {plan:?}"
        );
    }
    raw.close().await.expect("close");
    t.finish().await;
}
