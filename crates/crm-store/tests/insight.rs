//! The reports' reads on a fake clock, on both backends: a source's history over a window
//! of time (its registrations, then its later entries in time order, with those of
//! contacts that arrived before it), and each operator's recent assignments and the
//! waiting contacts it had no room for.

mod support;

use chrono::{DateTime, TimeDelta, Utc};
use crm_core::{
    DecisionPath, OperatorId, SourceDecision, SourceId, SourceRef, Store, Weight, WeightEntry,
    WeightSet, Window,
};
use crm_store::{Clock, testing::Backend};
use support::*;

crm_store::on_every_backend!(
    a_window_holds_exactly_its_entries,
    a_window_finds_a_contact_whose_clock_ran_behind_its_id,
    stats_count_recent_assignments_and_who_had_no_room,
);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).expect("valid")
}

/// Every entry of `source` in `[since, until)`, as the store streams them.
async fn read_all(
    t: &TestStore,
    source: SourceId,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<SourceDecision> {
    let window = Window::new(Some(since), Some(until), until).expect("a window");
    let mut all = Vec::new();
    let read = t
        .store
        .source_decisions(source, window, &mut |entry| all.push(entry))
        .await
        .expect("the window");
    assert_eq!(read, all.len() as u64);
    all
}

async fn a_window_holds_exactly_its_entries(backend: Backend) {
    let clock = Clock::fake(t0());
    let t = store_on(backend, &clock).await;
    let ann = operator(&t.store, "Ann", 100).await;
    let tg = source(&t.store, "tg", &[(ann, 1)]).await;
    let web = source(&t.store, "web", &[(ann, 1)]).await;
    let mut at = Vec::new();
    // tg: 3 at t0, 2 at +2 h (and 2 of web between them), 1 at +2.5 h.
    for (i, (code, step)) in [
        ("tg", 0),
        ("tg", 0),
        ("tg", 0),
        ("tg", 120),
        ("web", 0),
        ("tg", 0),
        ("web", 0),
        ("tg", 30),
    ]
    .into_iter()
    .enumerate()
    {
        clock.advance(TimeDelta::minutes(step));
        let s = if code == "tg" { tg } else { web };
        let c = register(&t.store, &format!("lead-{i}"), SourceRef::Id(s)).await;
        if code == "tg" {
            at.push((c.id, clock.now()));
        }
    }
    // The first contact, taken back by hand, writes an `unassigned` entry, which reports
    // leave out, and waits (the drain passes over Ann, the only one, for it) until Bob
    // gets a weight: its `drained` entry falls in the window though it arrived before.
    clock.advance(TimeDelta::minutes(1));
    t.store.unassign_contact(at[0].0).await.expect("unassign");
    clock.advance(TimeDelta::minutes(1));
    let bob = operator(&t.store, "Bob", 100).await;
    let weights = [(ann, 1), (bob, 1)]
        .map(|(operator_id, w)| WeightEntry {
            operator_id,
            weight: Weight::new(w).expect("a weight"),
        })
        .to_vec();
    t.store
        .replace_weights(tg, WeightSet::new(weights).expect("a set"))
        .await
        .expect("weights");

    let hour = TimeDelta::hours(1);
    let entries = read_all(&t, tg, t0() + hour, t0() + hour * 3).await;
    let times: Vec<DateTime<Utc>> = entries.iter().map(|e| e.at).collect();
    let drained_at = t0() + TimeDelta::minutes(152);
    assert_eq!(times, [at[3].1, at[4].1, at[5].1, drained_at]);
    assert!(
        entries[..3]
            .iter()
            .all(|e| e.path == DecisionPath::Registered && e.operator_id == Some(ann))
    );
    // (Ann is passed over only by the drain right after the unassignment.)
    assert_eq!(entries[3].path, DecisionPath::Drained);
    assert!([Some(ann), Some(bob)].contains(&entries[3].operator_id));

    // The first hour holds the first three registrations, and its end is excluded.
    let first = read_all(&t, tg, t0(), t0() + hour).await;
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|e| e.path == DecisionPath::Registered));
    let edge = read_all(&t, tg, t0() - hour, t0()).await;
    assert!(edge.is_empty());
    let web_entries = read_all(&t, web, t0(), t0() + hour * 3).await;
    assert_eq!(web_entries.len(), 2);
    t.finish().await;
}

/// Contacts are found by a range of ids (ids grow with arrival), and a contact whose time
/// is a few minutes behind an earlier id's (another replica's clock) is still in exactly the
/// windows its own time falls in.
async fn a_window_finds_a_contact_whose_clock_ran_behind_its_id(backend: Backend) {
    let clock = Clock::fake(t0());
    let t = store_on(backend, &clock).await;
    let ann = operator(&t.store, "Ann", 100).await;
    let tg = source(&t.store, "tg", &[(ann, 1)]).await;
    let mut ids = Vec::new();
    for step in [0, 60, -5, 10] {
        clock.advance(TimeDelta::minutes(step));
        let c = register(&t.store, &format!("lead-{step}"), SourceRef::Id(tg)).await;
        ids.push((c.id, clock.now()));
    }
    let minutes = |m| t0() + TimeDelta::minutes(m);
    for (since, until, expected) in [
        (0, 50, vec![ids[0].1]),
        (50, 58, vec![ids[2].1]),
        (58, 62, vec![ids[1].1]),
        (50, 70, vec![ids[1].1, ids[2].1, ids[3].1]),
        (66, 600, vec![]),
    ] {
        let mut times: Vec<_> = read_all(&t, tg, minutes(since), minutes(until))
            .await
            .iter()
            .map(|e| e.at)
            .collect();
        times.sort_unstable();
        let mut expected = expected;
        expected.sort_unstable();
        assert_eq!(times, expected, "[{since}, {until}) minutes");
        let window = Window::new(Some(minutes(since)), Some(minutes(until)), minutes(until))
            .expect("a window");
        let counted: u64 = t
            .store
            .source_assignments(tg, window)
            .await
            .expect("counts")
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(counted, times.len() as u64, "[{since}, {until}) minutes");
    }
    t.finish().await;
}

fn stats_of(stats: &[crm_core::OperatorStats], id: OperatorId) -> (i64, i64, i64) {
    let s = stats
        .iter()
        .find(|s| s.operator_id == id)
        .expect("the operator");
    (
        s.assigned_last_hour,
        s.assigned_last_day,
        s.waiting_for_capacity,
    )
}

async fn stats_count_recent_assignments_and_who_had_no_room(backend: Backend) {
    let clock = Clock::fake(t0());
    let t = store_on(backend, &clock).await;
    let ann = operator(&t.store, "Ann", 2).await;
    let bob = operator(&t.store, "Bob", 1).await;
    let tg = source(&t.store, "tg", &[(ann, 1), (bob, 1)]).await;
    let mut assigned = Vec::new();
    for i in 0..3 {
        assigned.push(register(&t.store, &format!("a{i}"), SourceRef::Id(tg)).await);
    }
    clock.advance(TimeDelta::hours(2));
    // Both full: these two wait, queued while Ann and Bob had no room.
    let mut waiting = Vec::new();
    for i in 0..2 {
        let c = register(&t.store, &format!("w{i}"), SourceRef::Id(tg)).await;
        assert!(c.operator.is_none());
        waiting.push(c);
    }
    let stats = t.store.operator_stats().await.expect("stats");
    assert_eq!(stats_of(&stats, ann), (0, 2, 2));
    assert_eq!(stats_of(&stats, bob), (0, 1, 2));

    // Ann closes one: the oldest waiting contact is drained to her, now.
    let ann_contact = assigned
        .iter()
        .find(|c| c.operator.as_ref().map(|o| o.id) == Some(ann))
        .expect("Ann has one");
    t.store.close_contact(ann_contact.id).await.expect("close");
    let stats = t.store.operator_stats().await.expect("stats");
    assert_eq!(stats_of(&stats, ann), (1, 3, 1));
    assert_eq!(stats_of(&stats, bob), (0, 1, 1));

    // A day later, nothing is recent.
    clock.advance(TimeDelta::hours(25));
    let stats = t.store.operator_stats().await.expect("stats");
    assert_eq!(stats_of(&stats, ann), (0, 0, 1));
    t.finish().await;
}
