//! `GET /api/sources/{id}/distribution` and `POST /api/sources/{id}/simulate` over HTTP,
//! on every backend: the figures reconcile with the contacts' histories, and a dry run
//! writes nothing and answers the same twice.

mod common;

use std::collections::BTreeMap;

use common::{TestApp, fields, id_of, json, problem, spawn_app_on};
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

crm_store::on_every_backend!(
    the_distribution_reconciles_with_the_history,
    the_distribution_window_is_checked,
    a_dry_run_writes_nothing_and_answers_the_same_twice,
    a_dry_run_body_is_checked_like_a_weights_put,
);

/// Each operator's entry of a distribution or a dry run, by operator id.
fn by_operator(answer: &Value) -> BTreeMap<i64, Value> {
    answer["operators"]
        .as_array()
        .expect("a list of operators")
        .iter()
        .map(|o| (o["operator_id"].as_i64().expect("an id"), o.clone()))
        .collect()
}

fn close_to(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

/// Four operators of one source: Ann and Dee can take contacts, Bob never has room and
/// Cid is switched off, so every draw is between Ann (3) and Dee (1).
async fn team(app: &TestApp) -> [i64; 4] {
    let ann = app.operator("Ann", 100).await;
    let bob = app.operator("Bob", 0).await;
    let cid = app.operator("Cid", 100).await;
    let dee = app.operator("Dee", 100).await;
    json(
        app.update_operator(cid, &json!({"is_active": false})).await,
        StatusCode::OK,
    )
    .await;
    app.source("tg", &[(ann, 3), (bob, 1), (cid, 2), (dee, 1)])
        .await;
    [ann, bob, cid, dee]
}

async fn the_distribution_reconciles_with_the_history(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let [ann, bob, cid, dee] = team(&app).await;
    let mut contacts = Vec::new();
    for i in 0..40 {
        contacts.push(id_of(app.contact(&format!("u{i}"), "tg").await));
    }
    // One of Ann's contacts moves to Dee by hand: beside the draws, not in them.
    let mut chosen = BTreeMap::<i64, u64>::new();
    for id in &contacts {
        let history = json(
            app.get(&format!("/api/contacts/{id}/decisions")).await,
            StatusCode::OK,
        )
        .await;
        let operator = history[0]["record"]["chosen"].as_i64().expect("a draw");
        *chosen.entry(operator).or_default() += 1;
    }
    let moved = {
        let mut moved = None;
        for id in &contacts {
            let contact = json(app.get_contact(*id).await, StatusCode::OK).await;
            if contact["operator_id"] == ann {
                moved = Some(*id);
                break;
            }
        }
        moved.expect("Ann has a contact")
    };
    json(
        app.assign_contact(moved, &json!({"operator_id": dee}))
            .await,
        StatusCode::OK,
    )
    .await;

    let report = json(app.get("/api/sources/1/distribution").await, StatusCode::OK).await;
    assert_eq!(report["source_id"], 1);
    assert_eq!(report["decisions"], 40, "{report}");
    assert_eq!(report["draws"], 40, "{report}");
    let shares = by_operator(&report);
    assert_eq!(
        shares.keys().copied().collect::<Vec<_>>(),
        [ann, bob, cid, dee]
    );
    // `assigned` is what the histories say each draw chose.
    for (id, share) in &shares {
        let drawn = chosen.get(id).copied().unwrap_or(0);
        assert_eq!(share["assigned"], drawn, "operator {id}: {share}");
    }
    assert!(close_to(&shares[&ann]["configured_share"], 3.0 / 7.0));
    assert!(close_to(&shares[&ann]["expected"], 30.0), "{report}");
    assert!(close_to(&shares[&dee]["expected"], 10.0), "{report}");
    assert!(shares[&ann]["z"].is_f64(), "{report}");
    // Never eligible: no variance, no z, never flagged; always passed over, and why.
    for (id, share) in [(bob, "at_capacity_share"), (cid, "inactive_share")] {
        let entry = &shares[&id];
        assert_eq!(entry["z"], Value::Null, "{entry}");
        assert_eq!(entry["flag"], false, "{entry}");
        assert!(close_to(&entry["expected"], 0.0), "{entry}");
        assert!(close_to(&entry[share], 1.0), "{entry}");
    }
    assert!(close_to(&shares[&ann]["at_capacity_share"], 0.0));
    assert_eq!(shares[&dee]["manual"], 1, "{report}");
    assert_eq!(shares[&ann]["manual"], 0, "{report}");

    // A window with nothing in it.
    let report = json(
        app.get(
            "/api/sources/1/distribution?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(report["decisions"], 0);
    assert_eq!(report["since"], "2000-01-01T00:00:00+00:00");
    assert!(
        by_operator(&report)
            .values()
            .all(|s| s["assigned"] == 0 && s["z"].is_null())
    );
}

async fn the_distribution_window_is_checked(backend: Backend) {
    let app = spawn_app_on(backend).await;
    team(&app).await;
    for query in [
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "since=2026-01-01T00:00:00Z&until=2026-01-08T00:00:01Z",
    ] {
        let body = problem(
            app.get(&format!("/api/sources/1/distribution?{query}"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&body), ["since"], "{query}: {body}");
    }
    // Exactly seven days is allowed.
    json(
        app.get(
            "/api/sources/1/distribution?since=2026-01-01T00:00:00Z&until=2026-01-08T00:00:00Z",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    problem(
        app.get("/api/sources/1/distribution?since=yesterday").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    problem(
        app.get("/api/sources/9/distribution").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

async fn simulate(app: &TestApp, body: &Value) -> reqwest::Response {
    app.send(Method::POST, "/api/sources/1/simulate", Some(body))
        .await
}

/// What a dry run must not change: every table's row count, and the operators (their
/// counters) and the source (its weights) as the API shows them.
async fn state(app: &TestApp) -> (BTreeMap<String, i64>, Value, Value, Value) {
    (
        app.row_counts().await,
        json(app.list_operators("").await, StatusCode::OK).await,
        json(app.get_source(1).await, StatusCode::OK).await,
        json(app.get("/api/queue").await, StatusCode::OK).await,
    )
}

async fn a_dry_run_writes_nothing_and_answers_the_same_twice(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let ann = app.operator("Ann", 1).await;
    let bob = app.operator("Bob", 1).await;
    let cid = app.operator("Cid", 5).await;
    app.source("tg", &[(ann, 1), (bob, 1)]).await;
    // Ann and Bob take one each; two more wait.
    for i in 0..4 {
        app.contact(&format!("u{i}"), "tg").await;
    }
    let before = state(&app).await;

    let body = json!({
        "operators": [
            {"operator_id": ann, "weight": 1},
            {"operator_id": cid, "weight": 2},
        ],
        "seed": 7,
        "picks": 1000,
    });
    let first = simulate(&app, &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.text().await.expect("a body");
    let second = simulate(&app, &body).await.text().await.expect("a body");
    assert_eq!(first, second, "same body and seed, same bytes");
    assert_eq!(state(&app).await, before, "a dry run writes nothing");

    let run: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(run["seed"], 7);
    assert_eq!(run["picks"], 1000);
    assert_eq!(run["waiting"], 2);
    assert_eq!(run["would_assign"], 2);
    assert_eq!(run["still_waiting"], 0);
    let ops = by_operator(&run);
    assert_eq!(ops.keys().copied().collect::<Vec<_>>(), [ann, bob, cid]);
    // Ann is full, as she would be: Cid takes every draw and both waiting contacts.
    assert_eq!(ops[&ann]["excluded"], "at_capacity");
    assert_eq!(ops[&ann]["predicted"], 0);
    assert_eq!(ops[&cid]["excluded"], Value::Null);
    assert_eq!(ops[&cid]["predicted"], 1000);
    assert!(close_to(&ops[&cid]["predicted_share"], 1.0));
    assert_eq!(ops[&cid]["would_take"], 2);
    assert!(close_to(&ops[&cid]["configured_share"], 2.0 / 3.0));
    assert_eq!(ops[&cid]["current_weight"], 0);
    assert!(close_to(&ops[&cid]["realised_share"], 0.0), "{run}");
    // Bob is dropped by the proposal; today he has half the weight and half the draws.
    assert_eq!(ops[&bob]["weight"], 0);
    assert!(close_to(&ops[&bob]["current_configured_share"], 0.5));
    assert!(close_to(&ops[&bob]["realised_share"], 0.5), "{run}");
    assert!(close_to(&ops[&ann]["realised_share"], 0.5), "{run}");

    // Without a seed, one is drawn and returned; sending it back gives the same answer.
    let fresh = json(
        simulate(
            &app,
            &json!({"operators": [{"operator_id": ann, "weight": 1}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fresh["picks"], 10_000, "the default");
    let seed = fresh["seed"].as_u64().expect("a seed");
    let again = json(
        simulate(
            &app,
            &json!({"operators": [{"operator_id": ann, "weight": 1}], "seed": seed}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fresh, again);
    assert_eq!(state(&app).await, before, "a dry run writes nothing");
}

async fn a_dry_run_body_is_checked_like_a_weights_put(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let ann = app.operator("Ann", 1).await;
    app.source("tg", &[(ann, 1)]).await;
    let before = state(&app).await;
    for (body, field) in [
        (
            json!({"operators": [{"operator_id": ann, "weight": 1}], "picks": 0}),
            "picks",
        ),
        (
            json!({"operators": [{"operator_id": ann, "weight": 1}], "picks": 1_000_001}),
            "picks",
        ),
        (
            json!({"operators": [{"operator_id": ann, "weight": 1}], "seed": -1}),
            "seed",
        ),
        (
            json!({"operators": [{"operator_id": ann, "weight": 1}], "seed": 9_007_199_254_740_992_i64}),
            "seed",
        ),
        (
            json!({"operators": [{"operator_id": ann, "weight": 0}]}),
            "operators[0].weight",
        ),
        (json!({"seed": 1}), "operators"),
        (
            json!({"operators": [{"operator_id": 99, "weight": 1}]}),
            "operators[0].operator_id",
        ),
        (
            json!({"operators": [{"operator_id": ann, "weight": 1}, {"operator_id": ann, "weight": 2}]}),
            "operators[1].operator_id",
        ),
    ] {
        let answer = problem(
            simulate(&app, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&answer), [field], "{body}: {answer}");
    }
    problem(
        app.send(
            Method::POST,
            "/api/sources/9/simulate",
            Some(&json!({"operators": []})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // An empty proposal: nobody would take anything.
    let run = json(
        simulate(&app, &json!({"operators": [], "seed": 1})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_operator(&run)[&ann]["predicted"], 0);
    assert_eq!(state(&app).await, before, "a dry run writes nothing");
}
