//! Fair pacing (`max_assignments_per_minute`): a paced operator takes its burst, then one
//! contact per interval, on a fake clock; the store owes a drain for the moment a bucket
//! refills; without a limit the drain is greedy.

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use crm_core::{
    AssignmentsPerMinute, Decision, Exclusion, OperatorId, OperatorPatch, SourceRef, Store,
};
use crm_store::{Clock, testing::Backend};
use support::*;

crm_store::on_every_backend!(
    paced_operators_take_their_burst_then_one_contact_per_interval,
    without_a_limit_the_first_operator_activated_takes_what_it_can,
    concurrent_registrations_share_a_burst_without_losing_claims,
);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).expect("valid")
}

/// Three switched-off operators of capacity 10 (paced at `rate` when given) on one source,
/// and 24 contacts waiting for them.
async fn three_operators_and_24_waiting(
    t: &TestStore,
    rate: Option<i64>,
) -> (Vec<OperatorId>, crm_core::SourceId) {
    let mut operators = Vec::new();
    for name in ["A", "B", "C"] {
        let id = operator(&t.store, name, 10).await;
        let patch = OperatorPatch {
            is_active: Some(false),
            max_assignments_per_minute: Some(
                rate.map(|r| AssignmentsPerMinute::new(r).expect("rate")),
            ),
            ..OperatorPatch::default()
        };
        let updated = t.store.update_operator(id, patch).await.expect("pace");
        assert_eq!(
            updated
                .max_assignments_per_minute
                .map(AssignmentsPerMinute::get),
            rate.map(|r| r as u32)
        );
        operators.push(id);
    }
    let weights: Vec<(OperatorId, i64)> = operators.iter().map(|&id| (id, 1)).collect();
    let s = source(&t.store, "paced", &weights).await;
    for i in 0..24 {
        let c = register(&t.store, &format!("lead-{i}"), SourceRef::Id(s)).await;
        assert!(c.operator.is_none(), "nobody is active yet");
    }
    (operators, s)
}

async fn activate(t: &TestStore, id: OperatorId) {
    let patch = OperatorPatch {
        is_active: Some(true),
        ..OperatorPatch::default()
    };
    t.store.update_operator(id, patch).await.expect("activate");
}

/// Open contacts per operator, and how many wait.
async fn loads(t: &TestStore, operators: &[OperatorId]) -> (Vec<i64>, usize) {
    let contacts = all_contacts(&t.store).await;
    let mut by: BTreeMap<OperatorId, i64> = operators.iter().map(|&id| (id, 0)).collect();
    let mut waiting = 0;
    for c in &contacts {
        match &c.operator {
            Some(o) => *by.entry(o.id).or_default() += 1,
            None => waiting += 1,
        }
    }
    (by.into_values().collect(), waiting)
}

async fn paced_operators_take_their_burst_then_one_contact_per_interval(backend: Backend) {
    let clock = Clock::fake(t0());
    let t = store_on(backend, &clock).await;
    let (ops, s) = three_operators_and_24_waiting(&t, Some(6)).await;
    assert_eq!(t.store.next_paced_drain(), None, "nobody is paced out yet");

    // Activated one after another on a clock that stands still: each takes its burst.
    let mut expected = vec![0, 0, 0];
    for (i, &id) in ops.iter().enumerate() {
        activate(&t, id).await;
        expected[i] = 6;
        assert_eq!(loads(&t, &ops).await, (expected.clone(), 24 - 6 * (i + 1)));
    }
    // Six wait although everyone has room: the store owes a drain when a bucket refills,
    // one interval (60 s / 6) on.
    assert_eq!(
        t.store.next_paced_drain(),
        Some(t0() + TimeDelta::seconds(10))
    );
    assert_eq!(t.store.drain_queue().await.expect("sweep"), 0, "too early");

    // Each interval refills one assignment per operator: 1/1/1, twice.
    for round in 1..=2 {
        clock.advance(TimeDelta::seconds(10));
        assert_eq!(t.store.drain_queue().await.expect("owed drain"), 3);
        assert_eq!(
            loads(&t, &ops).await,
            (
                vec![6 + round, 6 + round, 6 + round],
                6 - 3 * round as usize
            )
        );
    }
    assert_counters_match_rows(&t.store).await;

    // Each drained decision names who was paced out: the second of a round drew between
    // the two operators still in tokens, the third had one left.
    let waiting_then = all_contacts(&t.store).await;
    let last = waiting_then.last().expect("contacts");
    let history = t.store.contact_decisions(last.id).await.expect("history");
    let record = history
        .last()
        .and_then(|e| e.record.as_deref())
        .expect("record");
    let decision = Decision::from_record(record).expect("a record");
    let limited = decision
        .candidates
        .iter()
        .filter(|v| v.excluded == Some(Exclusion::RateLimited))
        .count();
    assert_eq!(limited, 2, "{record}");
    assert!(
        history
            .last()
            .expect("entry")
            .summary()
            .contains("2 rate_limited")
    );

    // A registration now finds everyone paced out: it waits, and a drain is owed.
    let now = clock.now();
    let c = register(&t.store, "late", SourceRef::Id(s)).await;
    assert!(c.operator.is_none());
    let owed = wait_for(|| t.store.next_paced_drain()).await;
    assert_eq!(owed, now + TimeDelta::seconds(10));
    // One interval later a registration claims a refilled operator (behind the waiting one,
    // which the drain after it serves).
    clock.advance(TimeDelta::seconds(10));
    t.store.drain_queue().await.expect("owed drain");
    let next = register(&t.store, "later", SourceRef::Id(s)).await;
    assert!(next.operator.is_some(), "a refilled operator takes it");
    assert_eq!(loads(&t, &ops).await.1, 0);
    assert_counters_match_rows(&t.store).await;

    // Removing the pace (null) makes an operator eligible at once (given room).
    let a = ops[0];
    for i in 0..3 {
        register(&t.store, &format!("more-{i}"), SourceRef::Id(s)).await;
    }
    let cleared = OperatorPatch {
        max_assignments_per_minute: Some(None),
        max_active_contacts: Some(crm_core::MaxActiveContacts::new(20).expect("limit")),
        ..OperatorPatch::default()
    };
    let updated = t.store.update_operator(a, cleared).await.expect("clear");
    assert_eq!(updated.max_assignments_per_minute, None);
    let (_, waiting) = loads(&t, &ops).await;
    assert_eq!(waiting, 0, "the unpaced operator took what waited");
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

async fn without_a_limit_the_first_operator_activated_takes_what_it_can(backend: Backend) {
    let clock = Clock::fake(t0());
    let t = store_on(backend, &clock).await;
    let (ops, _) = three_operators_and_24_waiting(&t, None).await;
    activate(&t, ops[0]).await;
    assert_eq!(loads(&t, &ops).await, (vec![10, 0, 0], 14));
    activate(&t, ops[1]).await;
    activate(&t, ops[2]).await;
    assert_eq!(loads(&t, &ops).await, (vec![10, 10, 4], 0));
    assert_eq!(t.store.next_paced_drain(), None);
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// The value `probe` returns once it returns one (a PostgreSQL drain after a registration
/// runs in the background), within 10 s.
async fn wait_for<T>(probe: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "never came");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Ten registrations at once on an operator with a burst of ten all get it (on PostgreSQL
/// they claim the same row at the same moment: a claim that compared the bucket's instant
/// lost all but one of them), and the eleventh waits.
async fn concurrent_registrations_share_a_burst_without_losing_claims(backend: Backend) {
    let clock = Clock::fake(t0());
    let t = store_on(backend, &clock).await;
    let a = operator(&t.store, "A", 100).await;
    let patch = OperatorPatch {
        max_assignments_per_minute: Some(Some(AssignmentsPerMinute::new(10).expect("rate"))),
        ..OperatorPatch::default()
    };
    t.store.update_operator(a, patch).await.expect("pace");
    let s = source(&t.store, "burst", &[(a, 1)]).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = std::sync::Arc::clone(&t.store);
        tasks.push(tokio::spawn(async move {
            store
                .register_contact(contact(&format!("lead-{i}"), SourceRef::Id(s)))
                .await
                .expect("register")
        }));
    }
    for task in tasks {
        let c = task.await.expect("no panic");
        assert_eq!(c.operator.map(|o| o.id), Some(a), "every one of the burst");
    }
    let late = register(&t.store, "late", SourceRef::Id(s)).await;
    assert!(late.operator.is_none(), "the eleventh waits for a refill");
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}
