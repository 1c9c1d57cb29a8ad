//! Per-source strategies over HTTP, on both backends: switching a source's strategy and
//! stickiness; a smooth source's exact shares and its recorded credits, reset by a real
//! weights change only; drains that follow the source's strategy; a returning lead that
//! goes back to its eligible owner, and the recorded fallback when the owner cannot take it.

mod common;

use common::{TestApp, fields, id_of, json, problem, spawn_app_on};
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

crm_store::on_every_backend!(
    a_source_switches_strategy_and_stickiness,
    a_smooth_source_gives_exact_shares_and_keeps_its_state,
    a_smooth_source_stays_exact_under_concurrent_writes,
    a_drain_follows_the_sources_strategy,
    a_smooth_dry_run_predicts_the_next_picks_exactly,
    deleting_a_weighted_operator_resets_the_smooth_state,
    a_returning_lead_goes_back_to_its_eligible_owner,
);

async fn a_source_switches_strategy_and_stickiness(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let plain = json(
        app.create_source(&json!({"name": "Bot", "code": "bot"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (&plain["strategy"], &plain["sticky_owner"]),
        (&json!("weighted_random"), &json!(false))
    );
    let body =
        json!({"name": "Web", "code": "web", "strategy": "smooth_weighted", "sticky_owner": true});
    let smooth = json(app.create_source(&body).await, StatusCode::CREATED).await;
    assert_eq!(
        (&smooth["strategy"], &smooth["sticky_owner"]),
        (&json!("smooth_weighted"), &json!(true))
    );
    let id = id_of(plain);
    let patched = json(
        app.update_source(id, &json!({"strategy": "smooth_weighted"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&patched["strategy"], &patched["sticky_owner"]),
        (&json!("smooth_weighted"), &json!(false))
    );
    let patched = json(
        app.update_source(id, &json!({"sticky_owner": true})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["strategy"], "smooth_weighted", "left unchanged");
    assert_eq!(patched["sticky_owner"], true);
    let read = json(app.get_source(id).await, StatusCode::OK).await;
    assert_eq!(read, patched);

    let refused = app
        .update_source(
            id,
            &json!({"strategy": "round_robin", "sticky_owner": "yes"}),
        )
        .await;
    let body = problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), ["strategy", "sticky_owner"]);
    let refused = app
        .create_source(&json!({"name": "X", "code": "x", "strategy": null}))
        .await;
    let body = problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), ["strategy"]);
    assert_eq!(
        json(app.get_source(id).await, StatusCode::OK).await,
        patched,
        "a refused change changes nothing"
    );
}

/// A source with three operators at weights 3:2:1 and room for everything.
async fn three_operators(app: &TestApp, code: &str, strategy: &str) -> (i64, [i64; 3]) {
    let ops = [
        app.operator("Anna", 1_000).await,
        app.operator("Boris", 1_000).await,
        app.operator("Vera", 1_000).await,
    ];
    let source = app
        .source(code, &[(ops[0], 3), (ops[1], 2), (ops[2], 1)])
        .await;
    json(
        app.update_source(source, &json!({"strategy": strategy}))
            .await,
        StatusCode::OK,
    )
    .await;
    (source, ops)
}

/// The record of a contact's `n`-th decision (1-based).
async fn record(app: &TestApp, contact: i64, n: usize) -> Value {
    let path = format!("/api/contacts/{contact}/decisions");
    let history = json(app.send(Method::GET, &path, None).await, StatusCode::OK).await;
    history[n - 1]["record"].clone()
}

async fn a_smooth_source_gives_exact_shares_and_keeps_its_state(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (source, ops) = three_operators(&app, "bot", "smooth_weighted").await;
    let mut counts = [0; 3];
    let mut last = 0;
    for i in 0..12 {
        let contact = app.contact(&format!("lead-{i}"), "bot").await;
        let chosen = contact["operator_id"].as_i64().expect("assigned");
        counts[ops
            .iter()
            .position(|&id| id == chosen)
            .expect("one of them")] += 1;
        if i == 5 {
            // After 6 picks (one full round of the weights' sum) the shares are exact.
            assert_eq!(counts, [3, 2, 1]);
        }
        last = id_of(contact);
    }
    assert_eq!(counts, [6, 4, 2], "exact every 6 picks");
    let stored = record(&app, last, 1).await;
    assert_eq!(stored["strategy"], "smooth_weighted");
    assert_eq!(stored["draw"], Value::Null, "a smooth pick draws nothing");
    let after = stored["credit_after"].clone();
    assert_eq!(after, json!([0, 0, 0]), "back at the start every 6 picks");

    // One more pick moves the credits; the same weights again keep them.
    let next = id_of(app.contact("lead-x", "bot").await);
    let moved = record(&app, next, 1).await["credit_after"].clone();
    assert_ne!(moved, json!([0, 0, 0]));
    let same = json!({"operators": [
        {"operator_id": ops[2], "weight": 1},
        {"operator_id": ops[0], "weight": 3},
        {"operator_id": ops[1], "weight": 2},
    ]});
    json(app.put_weights(source, &same).await, StatusCode::OK).await;
    let next = id_of(app.contact("lead-y", "bot").await);
    assert_eq!(record(&app, next, 1).await["credit"], moved, "kept");

    // A real change starts from 0.
    let changed = json!({"operators": [
        {"operator_id": ops[0], "weight": 1},
        {"operator_id": ops[1], "weight": 1},
        {"operator_id": ops[2], "weight": 1},
    ]});
    json(app.put_weights(source, &changed).await, StatusCode::OK).await;
    let next = id_of(app.contact("lead-z", "bot").await);
    assert_eq!(record(&app, next, 1).await["credit"], json!([0, 0, 0]));
}

/// Registrations at once (on SQLite, committed in groups whose credits the writer writes
/// once per group), mixed with closes and refused registrations (jobs that make the
/// writer write what it holds): every pick starts from the credits the one before it
/// left, in id order; the shares are exact; and the stored credits, read afresh after a
/// weights `PUT` that changes nothing, are the last pick's.
async fn a_smooth_source_stays_exact_under_concurrent_writes(backend: Backend) {
    use futures_util::{StreamExt, stream};

    let app = spawn_app_on(backend).await;
    let (source, ops) = three_operators(&app, "bot", "smooth_weighted").await;
    let mut closable = Vec::new();
    for i in 0..12 {
        closable.push(id_of(app.contact(&format!("first-{i}"), "bot").await));
    }
    // 600 registrations with a close or a refused registration after every 25th.
    let answers: Vec<(usize, Value)> = stream::iter(0..624)
        .map(|i| {
            let app = &app;
            let closable = &closable;
            async move {
                let (resp, status) = match (i % 26 == 25, i / 26) {
                    (true, n) if n % 2 == 0 => {
                        (app.close_contact(closable[n / 2]).await, StatusCode::OK)
                    }
                    (true, _) => {
                        let body = json!({"external_lead_id": "x", "source_code": "none"});
                        (app.create_contact(&body).await, StatusCode::NOT_FOUND)
                    }
                    (false, _) => {
                        let body =
                            json!({"external_lead_id": format!("lead-{i}"), "source_code": "bot"});
                        (app.create_contact(&body).await, StatusCode::CREATED)
                    }
                };
                (i, json(resp, status).await)
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    let mut ids: Vec<i64> = closable.clone();
    for (i, body) in &answers {
        match (i % 26 == 25, i / 26) {
            (false, _) => {
                assert!(body["operator_id"].is_i64(), "assigned: {body}");
                ids.push(body["id"].as_i64().expect("contact id"));
            }
            (true, n) if n % 2 == 1 => assert_eq!(body["code"], "not_found", "{body}"),
            (true, _) => {}
        }
    }
    assert_eq!(ids.len(), 612);
    ids.sort_unstable();
    let mut counts = [0; 3];
    let mut last = json!([0, 0, 0]);
    for &id in &ids {
        let stored = record(&app, id, 1).await;
        assert_eq!(
            stored["credit"], last,
            "contact {id} starts where the one before it ended"
        );
        last = stored["credit_after"].clone();
        let chosen = stored["chosen"].as_i64().expect("chosen");
        counts[ops
            .iter()
            .position(|&op| op == chosen)
            .expect("one of them")] += 1;
    }
    assert_eq!(counts, [306, 204, 102], "exact every 6 picks");
    assert_eq!(last, json!([0, 0, 0]));

    // One more pick, then the same weights again: the next pick reads the stored credits.
    let next = id_of(app.contact("one-more", "bot").await);
    let moved = record(&app, next, 1).await["credit_after"].clone();
    assert_ne!(moved, json!([0, 0, 0]));
    let same = json!({"operators": [
        {"operator_id": ops[0], "weight": 3},
        {"operator_id": ops[1], "weight": 2},
        {"operator_id": ops[2], "weight": 1},
    ]});
    json(app.put_weights(source, &same).await, StatusCode::OK).await;
    let after = id_of(app.contact("after-put", "bot").await);
    assert_eq!(record(&app, after, 1).await["credit"], moved);
}

async fn a_drain_follows_the_sources_strategy(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let anna = app.operator("Anna", 1).await;
    let boris = app.operator("Boris", 1).await;
    let source = app.source("bot", &[(anna, 1), (boris, 1)]).await;
    json(
        app.update_source(source, &json!({"strategy": "smooth_weighted"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let first = app.contact("a", "bot").await;
    let second = app.contact("b", "bot").await;
    let waiting = app.contact("c", "bot").await;
    assert_ne!(first["operator_id"], second["operator_id"], "one each");
    assert_eq!(waiting["operator_id"], Value::Null, "both full");

    // Closing Anna's contact drains the waiting one to her, by the smooth rule.
    let annas = if first["operator_id"] == anna {
        &first
    } else {
        &second
    };
    json(
        app.close_contact(id_of(annas.clone())).await,
        StatusCode::OK,
    )
    .await;
    let waiting = id_of(waiting);
    let drained = json(app.get_contact(waiting).await, StatusCode::OK).await;
    assert_eq!(drained["operator_id"], anna);
    let stored = record(&app, waiting, 2).await;
    assert_eq!(stored["strategy"], "smooth_weighted");
    assert!(stored["credit"].is_array() && stored["credit_after"].is_array());
}

async fn a_returning_lead_goes_back_to_its_eligible_owner(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let ops = [
        app.operator("Anna", 100).await,
        app.operator("Boris", 100).await,
        app.operator("Vera", 100).await,
    ];
    let source = app
        .source("bot", &[(ops[0], 1), (ops[1], 1), (ops[2], 1)])
        .await;
    json(
        app.update_source(source, &json!({"sticky_owner": true}))
            .await,
        StatusCode::OK,
    )
    .await;
    let first = app.contact("returning", "bot").await;
    let owner = first["operator_id"].as_i64().expect("assigned");
    json(app.close_contact(id_of(first)).await, StatusCode::OK).await;
    for _ in 0..20 {
        let again = app.contact("returning", "bot").await;
        assert_eq!(again["operator_id"], owner, "every time, closed or open");
        let stored = record(&app, id_of(again), 1).await;
        assert_eq!(stored["sticky"], json!({"owner": owner}));
    }

    // Switched off, the owner is passed over, and the record says so.
    json(
        app.update_operator(owner, &json!({"is_active": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    let fallback = app.contact("returning", "bot").await;
    let chosen = fallback["operator_id"].as_i64().expect("assigned");
    assert_ne!(chosen, owner);
    let stored = record(&app, id_of(fallback), 1).await;
    assert_eq!(
        stored["sticky_fallback"],
        json!({"owner": owner, "skipped": "inactive"})
    );
    assert!(stored["draw"].is_u64(), "the source's own rule drew");

    // The lead's owner is now the fallback's operator (its latest contact).
    let again = app.contact("returning", "bot").await;
    assert_eq!(again["operator_id"], chosen);
}

async fn a_smooth_dry_run_predicts_the_next_picks_exactly(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (source, ops) = three_operators(&app, "bot", "smooth_weighted").await;
    for i in 0..2 {
        app.contact(&format!("warm-{i}"), "bot").await;
    }
    let simulate = |body: Value| {
        let path = format!("/api/sources/{source}/simulate");
        let app = &app;
        async move {
            json(
                app.send(Method::POST, &path, Some(&body)).await,
                StatusCode::OK,
            )
            .await
        }
    };
    let same = json!({"operators": [
        {"operator_id": ops[0], "weight": 3},
        {"operator_id": ops[1], "weight": 2},
        {"operator_id": ops[2], "weight": 1},
    ], "picks": 5});
    let dry = simulate(same).await;
    assert_eq!(dry["strategy"], "smooth_weighted");
    let predicted: Vec<Value> = dry["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|o| o["predicted"].clone())
        .collect();
    let mut counts = [0; 3];
    for i in 0..5 {
        let contact = app.contact(&format!("next-{i}"), "bot").await;
        let chosen = contact["operator_id"].as_i64().expect("assigned");
        counts[ops
            .iter()
            .position(|&id| id == chosen)
            .expect("one of them")] += 1;
    }
    assert_eq!(
        predicted,
        counts.map(|n| json!(n)),
        "the next 5 picks, exactly"
    );

    // A real change starts the state again: 1:1:1 from 0 gives one each.
    let changed = json!({"operators": [
        {"operator_id": ops[0], "weight": 1},
        {"operator_id": ops[1], "weight": 1},
        {"operator_id": ops[2], "weight": 1},
    ], "picks": 3});
    let dry = simulate(changed).await;
    let predicted: Vec<&Value> = dry["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|o| &o["predicted"])
        .collect();
    assert_eq!(predicted, [&json!(1), &json!(1), &json!(1)]);
}

/// An operator deleted with its weights changes the source's weights as a `PUT` would: the
/// remaining credits start again from 0 (else they would no longer sum to 0 and the bound
/// would not hold).
async fn deleting_a_weighted_operator_resets_the_smooth_state(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (source, ops) = three_operators(&app, "bot", "smooth_weighted").await;
    let spare = app.operator("Spare", 5).await;
    json(
        app.update_operator(spare, &json!({"is_active": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    let weights = json!({"operators": [
        {"operator_id": ops[0], "weight": 3},
        {"operator_id": ops[1], "weight": 2},
        {"operator_id": ops[2], "weight": 1},
        {"operator_id": spare, "weight": 4},
    ]});
    json(app.put_weights(source, &weights).await, StatusCode::OK).await;
    let first = id_of(app.contact("a", "bot").await);
    let moved = record(&app, first, 1).await["credit_after"].clone();
    assert_ne!(moved, json!([0, 0, 0, 0]));
    let resp = app.delete_operator(spare).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let next = id_of(app.contact("b", "bot").await);
    assert_eq!(record(&app, next, 1).await["credit"], json!([0, 0, 0]));
}
