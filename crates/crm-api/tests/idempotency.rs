//! `Idempotency-Key` on `POST /api/contacts`: retries replay the first answer, a reused
//! key with another body is refused, and concurrent retries create one contact.

mod common;

use common::{fields, json, problem, spawn_app_on};
use crm_store::testing::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

crm_store::on_every_backend!(
    a_retry_replays_the_first_answer,
    a_key_with_another_body_is_refused_and_bad_keys_are_422,
    concurrent_retries_create_one_contact,
);

async fn post(app: &common::TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/contacts", app.address))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("answered")
}

async fn contact_count(app: &common::TestApp) -> usize {
    json(app.list_contacts("?limit=1000").await, StatusCode::OK)
        .await
        .as_array()
        .expect("a list")
        .len()
}

async fn a_retry_replays_the_first_answer(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let anna = app.operator("Anna", 5).await;
    app.source("bot", &[(anna, 1)]).await;
    let body =
        json!({"external_lead_id": "u1", "source_code": "bot", "payload": {"a": 1, "b": [2]}});
    let first = post(&app, "order-1", &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json(first, StatusCode::CREATED).await;

    // The same body with its keys in another order is the same request.
    let same =
        json!({"payload": {"b": [2], "a": 1}, "source_code": "bot", "external_lead_id": "u1"});
    let again = post(&app, "order-1", &same).await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(json(again, StatusCode::CREATED).await, first);
    assert_eq!(contact_count(&app).await, 1, "no second contact");
    let stats = json(app.operator_stats().await, StatusCode::OK).await;
    assert_eq!(stats[0]["open_contacts"], 1, "no second assignment");
    let leads = json(app.list_leads("").await, StatusCode::OK).await;
    assert_eq!(leads.as_array().map(Vec::len), Some(1), "no second lead");
    assert!(first.get("waiting_ahead").is_none(), "assigned: {first}");

    // A registration stored waiting says how many waited ahead of it, and so does its
    // replay, whatever happened to the queue since.
    let full = app.operator("Full", 0).await;
    app.source("busy", &[(full, 1)]).await;
    let ahead = json(
        app.create_contact(&json!({"external_lead_id": "w0", "source_code": "busy"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(ahead["waiting_ahead"], 0, "{ahead}");
    let body = json!({"external_lead_id": "w1", "source_code": "busy"});
    let queued = json(post(&app, "queued-1", &body).await, StatusCode::CREATED).await;
    assert_eq!(queued["waiting_ahead"], 1, "{queued}");
    assert_eq!(queued["operator_id"], Value::Null);
    let id = queued["id"].as_i64().expect("id");
    let read = json(app.get_contact(id).await, StatusCode::OK).await;
    assert!(
        read.get("waiting_ahead").is_none(),
        "a read has none: {read}"
    );
    json(
        app.close_contact(ahead["id"].as_i64().expect("id")).await,
        StatusCode::OK,
    )
    .await;
    let replayed = json(post(&app, "queued-1", &body).await, StatusCode::CREATED).await;
    assert_eq!(replayed, queued);
}

async fn a_key_with_another_body_is_refused_and_bad_keys_are_422(backend: Backend) {
    let app = spawn_app_on(backend).await;
    app.source("bot", &[]).await;
    let body = json!({"external_lead_id": "u1", "source_code": "bot"});
    json(post(&app, "k", &body).await, StatusCode::CREATED).await;
    let other = json!({"external_lead_id": "u2", "source_code": "bot"});
    problem(
        post(&app, "k", &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let bad = problem(
        post(&app, "has space", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&bad), ["Idempotency-Key"]);
    let long = "k".repeat(256);
    problem(
        post(&app, &long, &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(contact_count(&app).await, 1);
}

async fn concurrent_retries_create_one_contact(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app_on(backend).await);
    let anna = app.operator("Anna", 50).await;
    app.source("bot", &[(anna, 1)]).await;
    let body = json!({"external_lead_id": "u1", "source_code": "bot"});
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let app = std::sync::Arc::clone(&app);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let resp = post(&app, "same-key", &body).await;
            let replayed = resp.headers().get("idempotent-replayed").is_some();
            (replayed, json(resp, StatusCode::CREATED).await)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    assert_eq!(answers.iter().filter(|(replayed, _)| !replayed).count(), 1);
    assert!(answers.iter().all(|(_, body)| body == &answers[0].1));
    assert_eq!(contact_count(&app).await, 1);
}
