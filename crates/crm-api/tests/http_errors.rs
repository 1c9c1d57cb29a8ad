//! Errors over HTTP: every one is a problem document with a stable code, and a rejected
//! request writes nothing.

mod common;

use common::{fields, json, problem, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_400_and_writes_nothing() {
    let app = spawn_app().await;
    for body in [r#"{"name": "#, "{name: 1}", r#"{"name": "a"} x"#] {
        let resp = app
            .send_raw(
                Method::POST,
                "/api/operators",
                Some("application/json"),
                body,
            )
            .await;
        problem(resp, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    let operators = json(app.list_operators("").await, StatusCode::OK).await;
    assert_eq!(operators, json!([]));
}

#[tokio::test]
async fn wrong_types_and_missing_fields_are_422_naming_each_field() {
    let app = spawn_app().await;
    let resp = app
        .create_operator(&json!({"name": 5, "is_active": "yes", "max_active_contacts": 1.5}))
        .await;
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&body), ["name", "is_active", "max_active_contacts"]);

    let resp = app.create_source(&json!({"name": "  "})).await;
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&body), ["name", "code"]);

    for body in [json!([]), json!("x"), json!(null)] {
        let resp = app.create_operator(&body).await;
        problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let resp = app
        .send_raw(Method::POST, "/api/operators", Some("application/json"), "")
        .await;
    problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let operators = json(app.list_operators("").await, StatusCode::OK).await;
    assert_eq!(operators, json!([]));
}

#[tokio::test]
async fn out_of_range_values_are_422() {
    let app = spawn_app().await;
    let resp = app
        .create_operator(&json!({"name": "a".repeat(256), "max_active_contacts": -1}))
        .await;
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&body), ["name", "max_active_contacts"]);

    let resp = app
        .create_source(&json!({"name": "Bot", "code": "has space"}))
        .await;
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&body), ["code"]);
}

#[tokio::test]
async fn external_lead_id_must_be_a_string_or_an_integer() {
    let app = spawn_app().await;
    app.source("tg", &[]).await;
    for external_lead_id in [
        json!(true),
        json!(1.5),
        json!({"id": 1}),
        json!(null),
        json!(" "),
    ] {
        let resp = app
            .create_contact(&json!({"external_lead_id": external_lead_id, "source_code": "tg"}))
            .await;
        let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&body), ["external_lead_id"], "{external_lead_id}");
    }
    let leads = json(app.list_leads("").await, StatusCode::OK).await;
    assert_eq!(leads, json!([]));
}

#[tokio::test]
async fn a_contact_names_exactly_one_source() {
    let app = spawn_app().await;
    let source = app.source("tg", &[]).await;
    let both = json!({"external_lead_id": "u1", "source_id": source, "source_code": "tg"});
    let body = problem(
        app.create_contact(&both).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), ["source_code"]);

    let neither = json!({"external_lead_id": "u1"});
    let body = problem(
        app.create_contact(&neither).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), ["source_id"]);
    assert_eq!(
        json(app.list_leads("").await, StatusCode::OK).await,
        json!([])
    );
}

#[tokio::test]
async fn patch_rejects_explicit_null() {
    let app = spawn_app().await;
    let id = app.operator("Ann", 3).await;
    let resp = app.update_operator(id, &json!({"is_active": null})).await;
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&body), ["is_active"]);
    let operator = json(app.get_operator(id).await, StatusCode::OK).await;
    assert_eq!(operator["is_active"], true);
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = spawn_app().await;
    // `/` is the supervisor's page (tests/page_http.rs).
    for path in [
        "/api",
        "/api/nope",
        "/assets/nope.js",
        "/api/operators/1/nope",
        "/docs/nope",
    ] {
        problem(app.get(path).await, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn bad_query_values_are_422() {
    let app = spawn_app().await;
    for (query, field) in [
        ("/api/contacts?limit=0", "limit"),
        ("/api/contacts?limit=1001", "limit"),
        ("/api/contacts?limit=ten", "limit"),
        ("/api/contacts?status=pending", "status"),
        ("/api/leads?limit=0", "limit"),
        ("/api/operators?is_active=maybe", "is_active"),
    ] {
        let body = problem(
            app.get(query).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&body), [field], "{query}");
    }
}

#[tokio::test]
async fn trailing_slashes_are_served_without_redirect() {
    let app = spawn_app().await;
    let resp = app
        .send(
            Method::POST,
            "/api/operators/",
            Some(&json!({"name": "Ann"})),
        )
        .await;
    let created = json(resp, StatusCode::CREATED).await;
    for path in ["/api/operators", "/api/operators/"] {
        let list = json(app.get(path).await, StatusCode::OK).await;
        assert_eq!(list, json!([created]), "{path}");
    }
    let one = json(app.get("/api/operators/1/").await, StatusCode::OK).await;
    assert_eq!(one, created);
    json(app.get("/health/").await, StatusCode::OK).await;
}

#[tokio::test]
async fn health_answers_exactly_status_ok() {
    let app = spawn_app().await;
    assert_eq!(
        json(app.health().await, StatusCode::OK).await,
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn docs_and_openapi_document_are_served() {
    let app = spawn_app().await;
    let spec = json(app.get("/openapi.json").await, StatusCode::OK).await;
    assert!(spec["paths"]["/api/contacts"]["post"].is_object(), "{spec}");
    assert_eq!(
        spec,
        serde_json::from_str::<serde_json::Value>(&crm_api::openapi_spec()).expect("spec is JSON")
    );
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.expect("docs page");
    assert!(html.contains("swagger"), "{html}");
    // Swagger UI's other page, listed among the pages by its path.
    let receiver = app.get("/docs/oauth-receiver.html").await;
    assert_eq!(receiver.status(), StatusCode::OK);
    assert!(
        receiver.text().await.expect("page").contains("oauth2"),
        "the OAuth receiver page"
    );
    assert_eq!(
        app.send(Method::HEAD, "/docs", None).await.status(),
        StatusCode::OK
    );
}
