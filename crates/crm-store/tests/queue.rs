//! The waiting queue: which waiting contact a freed place goes to, no overtaking, the
//! sweep, and drains of two replicas at once (PostgreSQL).

mod support;

use crm_core::{
    ContactId, Decision, DecisionPath, Exclusion, OperatorId, OperatorPatch, SourceId, SourceRef,
    Store, StoreError,
};
use crm_store::testing::Backend;
use sea_orm::ConnectionTrait;
use support::*;

crm_store::on_every_backend!(
    a_freed_place_goes_to_the_oldest_contact_the_operator_may_take,
    a_registration_waits_behind_its_sources_queue,
    the_sweep_serves_what_no_write_of_this_process_freed,
    an_unassigned_contact_waits_at_its_place_and_passes_over_its_operator_once,
    a_full_history_refuses_the_change_and_never_spills_into_the_next_contact,
    the_count_ahead_stops_at_its_bound,
    a_long_queue_drained_below_the_bound_is_counted_exactly,
    each_drained_contact_has_one_latency_once_committed,
    the_first_entries_move_onto_their_contacts_and_back,
);

fn operator_of(contact: &crm_core::Contact) -> Option<OperatorId> {
    contact.operator.as_ref().map(|o| o.id)
}

async fn operator_now(store: &crm_store::DbStore, id: ContactId) -> Option<OperatorId> {
    operator_of(&store.get_contact(id).await.expect("contact"))
}

/// Raises an operator's limit behind the store's back, as another replica would: no
/// drain of this process sees it.
async fn raise_limit_elsewhere(t: &TestStore, operator: OperatorId, limit: i64) {
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    raw.execute_unprepared(&format!(
        "UPDATE operators SET max_active_contacts = {limit} WHERE id = {}",
        operator.get()
    ))
    .await
    .expect("raise the limit");
    raw.close().await.expect("close");
}

/// On SQLite, what the sweep does for a change made behind the writer's back.
async fn sweep_on_sqlite(t: &TestStore, backend: Backend) {
    if backend == Backend::Sqlite {
        t.store.drain_queue().await.expect("sweep");
    }
}

/// Operator A (one place) serves two sources. While A is full, contacts wait on both; each
/// close gives A the oldest waiting one, whichever source it came from.
async fn a_freed_place_goes_to_the_oldest_contact_the_operator_may_take(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s1 = source(&t.store, "one", &[(a, 1)]).await;
    let s2 = source(&t.store, "two", &[(a, 1)]).await;
    let first = register(&t.store, "c1", SourceRef::Id(s1)).await;
    assert_eq!(operator_of(&first), Some(a));
    let mut waiting = Vec::new();
    for (lead, s) in [("c2", s2), ("c3", s1), ("c4", s2)] {
        let c = register(&t.store, lead, SourceRef::Id(s)).await;
        assert_eq!(operator_of(&c), None, "{lead} waits: a is full");
        waiting.push(c.id);
    }
    let queue = t.store.queue(None).await.expect("queue");
    let counts: Vec<(SourceId, i64, ContactId)> = queue
        .iter()
        .map(|q| (q.source_id, q.waiting, q.oldest_id))
        .collect();
    assert_eq!(counts, vec![(s1, 1, waiting[1]), (s2, 2, waiting[0])]);
    // Stale: those that arrived before the moment asked about; only counted.
    let now = chrono::Utc::now();
    let stale =
        |queue: Vec<crm_core::SourceQueue>| -> Vec<i64> { queue.iter().map(|q| q.stale).collect() };
    let later = now + chrono::Duration::hours(1);
    let earlier = now - chrono::Duration::hours(1);
    assert_eq!(
        stale(t.store.queue(Some(later)).await.expect("queue")),
        vec![1, 2]
    );
    assert_eq!(
        stale(t.store.queue(Some(earlier)).await.expect("queue")),
        vec![0, 0]
    );
    assert_eq!(stale(t.store.queue(None).await.expect("queue")), vec![0, 0]);

    let mut holder = first.id;
    for (served, &id) in waiting.iter().enumerate() {
        t.store.close_contact(holder).await.expect("close");
        assert_eq!(
            operator_now(&t.store, id).await,
            Some(a),
            "the oldest, {id}"
        );
        for &later in &waiting[served + 1..] {
            assert_eq!(
                operator_now(&t.store, later).await,
                None,
                "{later} still waits"
            );
        }
        holder = id;
    }
    assert!(t.store.queue(None).await.expect("queue").is_empty());
    // Each history says it waited and was drained to A, by a draw that replays to A.
    for &id in &waiting {
        let history = t.store.contact_decisions(id).await.expect("history");
        let paths: Vec<DecisionPath> = history.iter().map(|e| e.path).collect();
        assert_eq!(paths, vec![DecisionPath::Queued, DecisionPath::Drained]);
        assert_eq!(history[1].operator_id, Some(a));
        let record = history[1].record.as_deref().expect("the drain's record");
        let decision = Decision::from_record(record).expect("a record");
        assert_eq!(decision.replay(), Some(a));
        assert!(history[1].summary().ends_with(&format!("→ operator {a}")));
    }
    // A manual assignment is in the history too, without a record.
    let b = operator(&t.store, "B", 5).await;
    t.store.assign_contact(holder, b).await.expect("assign");
    let history = t.store.contact_decisions(holder).await.expect("history");
    let last = history.last().expect("an entry");
    assert_eq!(
        (last.path, last.operator_id, last.record.as_deref()),
        (DecisionPath::Manual, Some(b), None)
    );
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// A contact of a source with contacts waiting waits behind them, even when an operator
/// could take it: here capacity grew where no drain of this process saw it. The next drain
/// (on PostgreSQL the one the registration runs, for capacity another replica freed; on
/// SQLite, where only the writer writes, the sweep) serves the oldest first, and the new
/// one as capacity allows.
async fn a_registration_waits_behind_its_sources_queue(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let first = register(&t.store, "first", SourceRef::Id(s)).await;
    let old = register(&t.store, "old", SourceRef::Id(s)).await;
    assert_eq!((operator_of(&first), operator_of(&old)), (Some(a), None));

    raise_limit_elsewhere(&t, a, 2).await;
    let new = register(&t.store, "new", SourceRef::Id(s)).await;
    assert_eq!(operator_of(&new), None, "the answer shows it queued");
    sweep_on_sqlite(&t, backend).await;
    assert_eq!(
        operator_now(&t.store, old.id).await,
        Some(a),
        "the oldest first"
    );
    assert_eq!(
        operator_now(&t.store, new.id).await,
        None,
        "no place left for it"
    );

    raise_limit_elsewhere(&t, a, 3).await;
    let newer = register(&t.store, "newer", SourceRef::Id(s)).await;
    assert_eq!(operator_of(&newer), None, "behind `new`");
    sweep_on_sqlite(&t, backend).await;
    assert_eq!(operator_now(&t.store, new.id).await, Some(a));
    assert_eq!(operator_now(&t.store, newer.id).await, None);

    // Each answer said how many waited ahead of it; so does its history. A read does not.
    assert_eq!(
        old.waiting_ahead,
        Some(0),
        "nobody was eligible, nobody ahead"
    );
    assert_eq!(new.waiting_ahead, Some(1));
    assert_eq!(newer.waiting_ahead, Some(1));
    assert_eq!(first.waiting_ahead, None, "assigned");
    let more: Vec<_> = register_in_turn(&t, s, 3).await;
    let ahead: Vec<Option<u64>> = more.iter().map(|c| c.waiting_ahead).collect();
    assert_eq!(ahead, [Some(1), Some(2), Some(3)]);
    assert_eq!(
        t.store
            .get_contact(newer.id)
            .await
            .expect("read")
            .waiting_ahead,
        None
    );
    let history = t
        .store
        .contact_decisions(more[2].id)
        .await
        .expect("history");
    let record = history[0].record.as_deref().expect("record");
    assert_eq!(Decision::from_record(record).and_then(|d| d.ahead), Some(3));
    assert_eq!(
        history[0].summary(),
        "0 of 1 eligible: 1 at_capacity; nobody to take it, waits behind 3",
        "{record}"
    );
    // A close gives A's place to the oldest waiting contact: one fewer ahead of the next.
    t.store.close_contact(first.id).await.expect("close");
    assert_eq!(operator_now(&t.store, newer.id).await, Some(a));
    let last = register(&t.store, "last", SourceRef::Id(s)).await;
    assert_eq!(last.waiting_ahead, Some(3));
    t.finish().await;
}

/// `n` registrations on source `s`, one after another.
async fn register_in_turn(t: &TestStore, s: SourceId, n: usize) -> Vec<crm_core::Contact> {
    let mut contacts = Vec::new();
    for i in 0..n {
        contacts.push(register(&t.store, &format!("more-{i}"), SourceRef::Id(s)).await);
    }
    contacts
}

/// The sweep assigns waiting contacts whose operators gained capacity where no drain of
/// this process saw it (another replica, or before an upgrade), oldest first.
async fn the_sweep_serves_what_no_write_of_this_process_freed(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    register(&t.store, "first", SourceRef::Id(s)).await;
    let mut waiting = Vec::new();
    for lead in ["w1", "w2", "w3"] {
        waiting.push(register(&t.store, lead, SourceRef::Id(s)).await.id);
    }
    assert_eq!(t.store.drain_queue().await.expect("sweep"), 0, "a is full");
    raise_limit_elsewhere(&t, a, 3).await;
    assert_eq!(t.store.drain_queue().await.expect("sweep"), 2);
    assert_eq!(operator_now(&t.store, waiting[0]).await, Some(a));
    assert_eq!(operator_now(&t.store, waiting[1]).await, Some(a));
    assert_eq!(operator_now(&t.store, waiting[2]).await, None);
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// `unassign` puts a contact back in the queue at its place and frees its operator; the
/// drain that follows passes that operator over for it (here B takes it), and its history
/// says so. Unassigning a waiting contact changes nothing; a closed one is refused. When
/// nobody else can take it, it waits, and a later drain may give it back (documented).
async fn an_unassigned_contact_waits_at_its_place_and_passes_over_its_operator_once(
    backend: Backend,
) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 2).await;
    let b = operator(&t.store, "B", 1).await;
    let s = source(&t.store, "src", &[(a, 1), (b, 1)]).await;
    let off = OperatorPatch {
        is_active: Some(false),
        ..OperatorPatch::default()
    };
    let on = OperatorPatch {
        is_active: Some(true),
        ..OperatorPatch::default()
    };
    t.store
        .update_operator(b, off.clone())
        .await
        .expect("B off");
    let first = register(&t.store, "first", SourceRef::Id(s)).await;
    assert_eq!(operator_of(&first), Some(a));
    t.store.update_operator(b, on).await.expect("B on");

    let moved = t.store.unassign_contact(first.id).await.expect("unassign");
    assert_eq!(operator_of(&moved), Some(b), "the drain passed A over");
    let history = t.store.contact_decisions(first.id).await.expect("history");
    let paths: Vec<DecisionPath> = history.iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        [
            DecisionPath::Registered,
            DecisionPath::Unassigned,
            DecisionPath::Drained
        ]
    );
    assert_eq!(history[1].operator_id, Some(a), "taken from A");
    let record = history[2].record.as_deref().expect("the drain's record");
    let decision = Decision::from_record(record).expect("a record");
    let verdict_of_a = decision
        .candidates
        .iter()
        .find(|v| v.candidate.operator_id == a)
        .expect("A was a candidate");
    assert_eq!(verdict_of_a.excluded, Some(Exclusion::UnassignedFrom));
    assert_eq!(decision.replay(), Some(b));
    assert_counters_match_rows(&t.store).await;

    // With A switched off, B is the only one that could take it back: it waits, first in
    // the queue.
    t.store.update_operator(a, off).await.expect("A off");
    let back = t.store.unassign_contact(first.id).await.expect("unassign");
    assert_eq!(operator_of(&back), None, "B passed over, A inactive");
    let queue = t.store.queue(None).await.expect("queue");
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].oldest_id, first.id);
    // Unassigning it again changes nothing, not even its history.
    let before = t.store.contact_decisions(first.id).await.expect("history");
    let again = t.store.unassign_contact(first.id).await.expect("no-op");
    assert_eq!(operator_of(&again), None);
    let after = t.store.contact_decisions(first.id).await.expect("history");
    assert_eq!(before.len(), after.len());
    // A later drain treats it like any waiting contact.
    t.store.drain_queue().await.expect("sweep");
    assert_eq!(operator_now(&t.store, first.id).await, Some(b));
    assert_counters_match_rows(&t.store).await;

    t.store.close_contact(first.id).await.expect("close");
    assert!(matches!(
        t.store.unassign_contact(first.id).await,
        Err(StoreError::ContactClosed)
    ));
    assert!(matches!(
        t.store
            .unassign_contact(ContactId(first.id.get() + 1000))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// A contact's history holds 65,535 entries (its range of the packed key). The change
/// that would add one more is refused whole, and nothing lands in the next contact's range.
async fn a_full_history_refuses_the_change_and_never_spills_into_the_next_contact(
    backend: Backend,
) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 5).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let first = register(&t.store, "first", SourceRef::Id(s)).await;
    let next = register(&t.store, "next", SourceRef::Id(s)).await;
    let raw = sea_orm::Database::connect(&t.db.url)
        .await
        .expect("connect");
    let id = first.id.get();
    raw.execute_unprepared(&format!(
        "INSERT INTO contact_decisions (id, contact_id, seq, path, source_id, operator_id, record, at) \
         SELECT {id} * 65536 + 65535, {id}, 65535, 'manual', source_id, operator_id, NULL, \
         created_at FROM contacts WHERE id = {id}"
    ))
    .await
    .expect("fill the history's last place");
    raw.close().await.expect("close");
    assert!(matches!(
        t.store.unassign_contact(first.id).await,
        Err(StoreError::Internal(_))
    ));
    assert_eq!(
        operator_now(&t.store, first.id).await,
        Some(a),
        "nothing changed"
    );
    let history = t.store.contact_decisions(next.id).await.expect("history");
    assert_eq!(history.len(), 1, "the next contact's history is its own");
    assert_counters_match_rows(&t.store).await;
    t.finish().await;
}

/// Two replicas on one PostgreSQL database, each registering, closing and switching
/// operators on and off at once: no limit is exceeded, every counter equals its rows,
/// and once both have swept, no waiting contact has an operator that could take it.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_drain_without_exceeding_a_limit() {
    /// 8 tasks, 1,000 events in all.
    const EVENTS_PER_TASK: usize = 125;
    let t = store(Backend::Postgres).await;
    let second = std::sync::Arc::new(
        crm_store::connect(&crm_store::StoreConfig {
            database_url: t.db.database_url(),
            ..crm_store::StoreConfig::default()
        })
        .await
        .expect("second replica"),
    );
    let mut operators = Vec::new();
    for i in 0..4 {
        operators.push(operator(&t.store, &format!("op{i}"), 3).await);
    }
    let weights: Vec<(OperatorId, i64)> = operators.iter().map(|&o| (o, 1)).collect();
    let s1 = source(&t.store, "one", &weights[..3]).await;
    let s2 = source(&t.store, "two", &weights[1..]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8_usize {
        let store = if task % 2 == 0 {
            std::sync::Arc::clone(&t.store)
        } else {
            std::sync::Arc::clone(&second)
        };
        let operators = operators.clone();
        tasks.spawn(async move {
            for i in 0..EVENTS_PER_TASK {
                let step = task * EVENTS_PER_TASK + i;
                match step % 4 {
                    0 | 1 => {
                        let s = if step.is_multiple_of(3) { s1 } else { s2 };
                        store
                            .register_contact(contact(&format!("l{step}"), SourceRef::Id(s)))
                            .await
                            .expect("register");
                    }
                    2 => {
                        let open = store
                            .list_contacts(crm_core::ContactFilter {
                                status: Some(crm_core::ContactStatus::Open),
                                operator_id: None,
                                source_id: None,
                                lead_id: None,
                                unassigned: false,
                                page: crm_core::Page {
                                    after: None,
                                    limit: 8,
                                },
                            })
                            .await
                            .expect("list");
                        if let Some(c) = open.get(step % 8) {
                            store.close_contact(c.id).await.expect("close");
                        }
                    }
                    _ => {
                        let patch = OperatorPatch {
                            is_active: Some(!step.is_multiple_of(3)),
                            ..OperatorPatch::default()
                        };
                        store
                            .update_operator(operators[step % operators.len()], patch)
                            .await
                            .expect("switch");
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task panicked");
    }
    t.store.drain_queue().await.expect("sweep");
    second.drain_queue().await.expect("sweep");
    assert_counters_match_rows(&t.store).await;
    let ops = t
        .store
        .list_operators(crm_core::OperatorFilter::default())
        .await
        .expect("operators");
    for q in t.store.queue(None).await.expect("queue") {
        let source = t.store.get_source(q.source_id).await.expect("source");
        for so in &source.operators {
            let op = ops
                .iter()
                .find(|o| o.id == so.operator.id)
                .expect("operator");
            assert!(
                !op.is_active || op.open_contacts >= op.max_active_contacts.get(),
                "{} wait on source {} although operator {} may take them",
                q.waiting,
                q.source_id,
                op.id
            );
        }
    }
    for op in &ops {
        assert!(
            op.open_contacts <= op.max_active_contacts.get(),
            "operator {} over its limit",
            op.id
        );
    }
    // No contact was assigned twice: each history has at most one automatic assignment
    // (nothing here moves a contact by hand), and it names the contact's operator now.
    let contacts = all_contacts(&t.store).await;
    for c in &contacts {
        let history = t.store.contact_decisions(c.id).await.expect("history");
        let assigned: Vec<Option<OperatorId>> = history
            .iter()
            .filter(|e| e.operator_id.is_some())
            .map(|e| e.operator_id)
            .collect();
        assert!(
            assigned.len() <= 1,
            "contact {} assigned twice: {history:?}",
            c.id
        );
        assert_eq!(
            assigned.first().copied().flatten(),
            operator_of(c),
            "contact {}",
            c.id
        );
    }
    // Once capacity allows, the queue empties, whichever replica the change goes through.
    for (i, &op) in operators.iter().enumerate() {
        let store = if i % 2 == 0 { &t.store } else { &second };
        let patch = OperatorPatch {
            is_active: Some(true),
            max_active_contacts: Some(crm_core::MaxActiveContacts::new(1_000).expect("limit")),
            ..OperatorPatch::default()
        };
        store.update_operator(op, patch).await.expect("open up");
    }
    // The updates' drains may go on after their answers (a long drain does): wait for
    // the outcome, with a ceiling.
    let ceiling = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !t.store.queue(None).await.expect("queue").is_empty() {
        assert!(
            std::time::Instant::now() < ceiling,
            "the queue did not empty once capacity allowed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_counters_match_rows(&t.store).await;
    second.shutdown().await;
    t.finish().await;
}

/// Past [`crm_core::Prepared::MAX_AHEAD`] waiting, a registration is told that many (at
/// least), on both backends: counting further would walk the queue for every registration.
async fn the_count_ahead_stops_at_its_bound(backend: Backend) {
    let t = store(backend).await;
    let s = source(&t.store, "nobody", &[]).await;
    let bound = crm_core::Prepared::MAX_AHEAD;
    let contacts = register_in_turn(&t, s, usize::try_from(bound).expect("small") + 2).await;
    let ahead: Vec<Option<u64>> = contacts.iter().map(|c| c.waiting_ahead).collect();
    let expected: Vec<Option<u64>> = (0..=bound).chain([bound]).map(Some).collect();
    assert_eq!(ahead, expected);
    // Counted afresh (the sweep forgets what the SQLite writer knew): still the bound.
    t.store.drain_queue().await.expect("sweep");
    for lead in ["after-1", "after-2"] {
        let c = register(&t.store, lead, SourceRef::Id(s)).await;
        assert_eq!(c.waiting_ahead, Some(bound));
    }
    t.finish().await;
}

/// A queue counted past the bound (so known only as "at least that many") and then
/// drained below it is counted exactly again: each registration is told how many wait.
async fn a_long_queue_drained_below_the_bound_is_counted_exactly(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let bound = usize::try_from(crm_core::Prepared::MAX_AHEAD).expect("small");
    let first = register(&t.store, "first", SourceRef::Id(s)).await;
    let mut waiting = register_in_turn(&t, s, bound + 2).await;
    // Counted afresh past the bound: at least that many.
    t.store.drain_queue().await.expect("sweep");
    let c = register(&t.store, "after", SourceRef::Id(s)).await;
    assert_eq!(c.waiting_ahead, Some(crm_core::Prepared::MAX_AHEAD));
    waiting.push(c);
    // Each close hands A the oldest waiting contact, which is closed next: two drains,
    // then a registration, until the queue is well below the bound.
    let mut assigned = first.id;
    for round in 1..=8 {
        for _ in 0..2 {
            t.store.close_contact(assigned).await.expect("close");
            assigned = waiting.remove(0).id;
            let now = t.store.get_contact(assigned).await.expect("read");
            assert!(now.operator.is_some(), "drained in turn");
        }
        let probe = register(&t.store, &format!("probe-{round}"), SourceRef::Id(s)).await;
        let expected = waiting.len().min(bound);
        assert_eq!(
            probe.waiting_ahead,
            Some(u64::try_from(expected).expect("small")),
            "after round {round}"
        );
        waiting.push(probe);
    }
    t.finish().await;
}

/// Each contact a drain assigns leaves one latency for `/metrics`, noted once the drain's
/// unit of work has committed, and taken once.
async fn each_drained_contact_has_one_latency_once_committed(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let first = register(&t.store, "first", SourceRef::Id(s)).await;
    for i in 0..3 {
        register(&t.store, &format!("w{i}"), SourceRef::Id(s)).await;
    }
    t.store.take_drain_latencies();
    t.store.close_contact(first.id).await.expect("close");
    let noted = t.store.take_drain_latencies();
    assert_eq!(noted.len(), 1, "one contact drained: {noted:?}");
    assert!(t.store.take_drain_latencies().is_empty(), "taken once");
    t.finish().await;
}

/// A contact's first entry lives on its row (migration `m20261206_000011`): going down
/// writes every first entry back into the history table, and up again moves them back onto
/// the rows, with every history read the same as before.
async fn the_first_entries_move_onto_their_contacts_and_back(backend: Backend) {
    let t = store(backend).await;
    let a = operator(&t.store, "A", 1).await;
    let s = source(&t.store, "src", &[(a, 1)]).await;
    let first = register(&t.store, "first", SourceRef::Id(s)).await;
    let second = register(&t.store, "second", SourceRef::Id(s)).await;
    t.store.close_contact(first.id).await.expect("close");
    t.store.drain_queue().await.expect("sweep");
    let histories = |store: std::sync::Arc<crm_store::DbStore>| async move {
        let mut all = Vec::new();
        for id in [first.id, second.id] {
            all.push(store.contact_decisions(id).await.expect("history"));
        }
        all
    };
    let before = histories(t.store.clone()).await;
    let paths: Vec<Vec<DecisionPath>> = before
        .iter()
        .map(|h| h.iter().map(|e| e.path).collect())
        .collect();
    assert_eq!(
        paths,
        vec![
            vec![DecisionPath::Registered],
            vec![DecisionPath::Queued, DecisionPath::Drained]
        ]
    );
    let TestStore { store, db } = t;
    store.shutdown().await;
    drop(store);
    let config = crm_store::StoreConfig {
        database_url: db.database_url(),
        ..crm_store::StoreConfig::default()
    };
    // Migration 11, and every one after it.
    let all = crm_store::migrate(&config, crm_store::MigrateAction::Up)
        .await
        .expect("up");
    let eleventh = all
        .iter()
        .position(|m| m.name == "m20261206_000011_first_entry_on_contact")
        .expect("migration 11");
    let steps = u32::try_from(all.len() - eleventh).expect("a few");
    crm_store::migrate(&config, crm_store::MigrateAction::Down(steps))
        .await
        .expect("down to before migration 11");
    let raw = sea_orm::Database::connect(&db.url).await.expect("connect");
    let firsts = raw
        .query_one_raw(sea_orm::Statement::from_string(
            raw.get_database_backend(),
            "SELECT COUNT(*) FROM contact_decisions WHERE seq = 1",
        ))
        .await
        .expect("count")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("a count");
    assert_eq!(firsts, 2, "every first entry is back in the history table");
    raw.close().await.expect("close");
    crm_store::migrate(&config, crm_store::MigrateAction::Up)
        .await
        .expect("up again");
    let t = open(db).await;
    assert_eq!(histories(t.store.clone()).await, before);
    t.finish().await;
}
