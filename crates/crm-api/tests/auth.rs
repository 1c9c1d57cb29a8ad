//! Scoped access with `CRM_ADMIN_TOKEN` set: the admin token may do everything, a
//! source key may only register contacts for its own source, and everything else is
//! 401 (with `WWW-Authenticate: Bearer`) or 403, as problem details.

mod common;

use common::{json, problem, spawn_app_secured};
use crm_store::testing::Backend;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";

crm_store::on_every_backend!(
    admin_token_and_source_keys_are_enforced,
    revoked_keys_stop_working_and_keys_are_listed_without_secrets,
    no_spelling_of_a_path_gets_past_authentication,
    the_bearer_scheme_is_case_insensitive,
    a_viewer_key_reads_and_dry_runs_but_writes_nothing,
);

fn bearer(req: RequestBuilder, token: &str) -> RequestBuilder {
    req.header("authorization", format!("Bearer {token}"))
}

async fn secured(backend: Backend) -> common::TestApp {
    spawn_app_secured(backend, ADMIN).await
}

async fn post_as(
    app: &common::TestApp,
    token: Option<&str>,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    let mut req = app.client.post(format!("{}{path}", app.address)).json(body);
    if let Some(token) = token {
        req = bearer(req, token);
    }
    req.send().await.expect("answered")
}

async fn get_as(app: &common::TestApp, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut req = app.client.get(format!("{}{path}", app.address));
    if let Some(token) = token {
        req = bearer(req, token);
    }
    req.send().await.expect("answered")
}

async fn unauthorized(resp: reqwest::Response) {
    assert_eq!(
        resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

async fn admin_token_and_source_keys_are_enforced(backend: Backend) {
    let app = secured(backend).await;
    // Open routes stay open.
    assert_eq!(get_as(&app, None, "/health").await.status(), StatusCode::OK);
    assert_eq!(
        get_as(&app, None, "/openapi.json").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get_as(&app, None, "/metrics").await.status(),
        StatusCode::OK
    );
    // No or wrong credentials: 401, nothing written.
    unauthorized(get_as(&app, None, "/api/operators").await).await;
    unauthorized(get_as(&app, Some("wrong"), "/api/operators").await).await;
    unauthorized(
        post_as(
            &app,
            Some("crm_sk_forged"),
            "/api/sources",
            &json!({"name": "x", "code": "x"}),
        )
        .await,
    )
    .await;

    let admin = Some(ADMIN);
    let anna = json(
        post_as(&app, admin, "/api/operators", &json!({"name": "Anna"})).await,
        StatusCode::CREATED,
    )
    .await;
    let bot = json(
        post_as(
            &app,
            admin,
            "/api/sources",
            &json!({"name": "Bot", "code": "bot"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let other = json(
        post_as(
            &app,
            admin,
            "/api/sources",
            &json!({"name": "Other", "code": "other"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let weights = bearer(
        app.client.put(format!(
            "{}/api/sources/{}/operators",
            app.address, bot["id"]
        )),
        ADMIN,
    )
    .json(&json!({"operators": [{"operator_id": anna["id"], "weight": 1}]}))
    .send()
    .await
    .expect("answered");
    assert_eq!(weights.status(), StatusCode::OK);
    let issued = json(
        post_as(
            &app,
            admin,
            &format!("/api/sources/{}/keys", bot["id"]),
            &json!({"label": "prod bot"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let key = issued["key"]
        .as_str()
        .expect("the key is shown once")
        .to_owned();
    assert!(key.starts_with("crm_sk_"));

    // The key registers contacts for its own source, by id or by code.
    let by_id = json!({"external_lead_id": "u1", "source_id": bot["id"]});
    json(
        post_as(&app, Some(&key), "/api/contacts", &by_id).await,
        StatusCode::CREATED,
    )
    .await;
    let by_code = json!({"external_lead_id": "u2", "source_code": "bot"});
    json(
        post_as(&app, Some(&key), "/api/contacts/", &by_code).await,
        StatusCode::CREATED,
    )
    .await;
    // ...and nothing else.
    let foreign = json!({"external_lead_id": "u3", "source_id": other["id"]});
    problem(
        post_as(&app, Some(&key), "/api/contacts", &foreign).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let foreign_code = json!({"external_lead_id": "u3", "source_code": "other"});
    problem(
        post_as(&app, Some(&key), "/api/contacts", &foreign_code).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        get_as(&app, Some(&key), "/api/contacts").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        post_as(&app, Some(&key), "/api/operators", &json!({"name": "Eve"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let contacts = json(get_as(&app, admin, "/api/contacts").await, StatusCode::OK).await;
    assert_eq!(
        contacts.as_array().map(Vec::len),
        Some(2),
        "the refused requests wrote nothing"
    );
    let leads = json(get_as(&app, admin, "/api/leads").await, StatusCode::OK).await;
    assert_eq!(leads.as_array().map(Vec::len), Some(2));
}

async fn revoked_keys_stop_working_and_keys_are_listed_without_secrets(backend: Backend) {
    let app = secured(backend).await;
    let admin = Some(ADMIN);
    let bot = json(
        post_as(
            &app,
            admin,
            "/api/sources",
            &json!({"name": "Bot", "code": "bot"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let keys_path = format!("/api/sources/{}/keys", bot["id"]);
    let issued = json(
        post_as(&app, admin, &keys_path, &json!({})).await,
        StatusCode::CREATED,
    )
    .await;
    let key = issued["key"].as_str().expect("key").to_owned();
    let body = json!({"external_lead_id": "u1", "source_code": "bot"});
    json(
        post_as(&app, Some(&key), "/api/contacts", &body).await,
        StatusCode::CREATED,
    )
    .await;

    let listed = json(get_as(&app, admin, &keys_path).await, StatusCode::OK).await;
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], issued["id"]);
    assert!(key.starts_with(listed[0]["prefix"].as_str().expect("prefix")));
    assert!(
        listed[0]["last_used_at"].is_string(),
        "the use was recorded"
    );
    assert!(
        !listed[0].to_string().contains(&key),
        "the key is never listed"
    );

    let revoke = bearer(
        app.client
            .delete(format!("{}{keys_path}/{}", app.address, issued["id"])),
        ADMIN,
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    unauthorized(post_as(&app, Some(&key), "/api/contacts", &body).await).await;
    problem(
        post_as(&app, admin, "/api/sources/999/keys", &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[test]
fn the_openapi_document_declares_the_bearer_scheme() {
    let spec: Value = serde_json::from_str(&crm_api::openapi_spec()).expect("json");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let register = &spec["paths"]["/api/contacts"]["post"];
    let security = register["security"].as_array().expect("declared");
    assert!(
        security.iter().any(|s| s.get("bearer").is_some()),
        "{security:?}"
    );
    assert!(register["responses"].get("401").is_some());
    assert!(register["responses"].get("403").is_some());
    assert!(spec["paths"]["/health"]["get"].get("security").is_none());
}

/// The router serves `//api/operators` as `/api/operators` (slashes are merged, a
/// trailing one trimmed), so authentication must judge the same path the router does:
/// it once judged the path as sent, and `POST //api/operators` without a token created
/// an operator.
async fn no_spelling_of_a_path_gets_past_authentication(backend: Backend) {
    let app = secured(backend).await;
    let spellings = [
        "//api/operators",
        "///api/operators/",
        "/api//operators",
        "//api//operators//",
        "/api/operators/",
        "//api",
        "//docs/../api/operators",
    ];
    for path in spellings {
        let created = post_as(&app, None, path, &json!({"name": "Mallory"})).await;
        assert_ne!(
            created.status(),
            StatusCode::CREATED,
            "POST {path} without a token"
        );
        assert!(
            !created.status().is_success(),
            "POST {path} without a token answered {}",
            created.status()
        );
        let listed = get_as(&app, None, path).await;
        assert!(
            !listed.status().is_success(),
            "GET {path} without a token answered {}",
            listed.status()
        );
    }
    unauthorized(post_as(&app, None, "//api/operators", &json!({"name": "Mallory"})).await).await;
    let operators = json(
        get_as(&app, Some(ADMIN), "/api/operators").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(operators, json!([]), "nothing was written");
    // The open paths stay open in any spelling the router accepts.
    assert_eq!(
        get_as(&app, None, "//health").await.status(),
        StatusCode::OK
    );
}

/// RFC 9110 (11.1): the authentication scheme is case-insensitive, so `bearer`, `BEARER`
/// and `bEaReR` name the same scheme as `Bearer`. Only `Bearer ` and `bearer ` once
/// were accepted.
async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let app = secured(backend).await;
    let with = |authorization: String| {
        app.client
            .get(format!("{}/api/operators", app.address))
            .header("authorization", authorization)
            .send()
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = with(format!("{scheme} {ADMIN}")).await.expect("answered");
        assert_eq!(resp.status(), StatusCode::OK, "{scheme} {ADMIN}");
    }
    // A source key too, through its own check.
    let bot = json(
        post_as(
            &app,
            Some(ADMIN),
            "/api/sources",
            &json!({"name": "Bot", "code": "bot"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let issued = json(
        post_as(
            &app,
            Some(ADMIN),
            &format!("/api/sources/{}/keys", bot["id"]),
            &json!({}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let key = issued["key"].as_str().expect("key");
    let registered = app
        .client
        .post(format!("{}/api/contacts", app.address))
        .header("authorization", format!("BEARER {key}"))
        .json(&json!({"external_lead_id": "u1", "source_code": "bot"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(registered.status(), StatusCode::CREATED);
    // Another scheme, or the scheme glued to the token, is still no bearer credential.
    for value in [
        format!("Basic {ADMIN}"),
        format!("Bearer{ADMIN}"),
        format!("Bearerx {ADMIN}"),
        "Bearer wrong".to_owned(),
    ] {
        unauthorized(with(value).await.expect("answered")).await;
    }
}

async fn send_as(
    app: &common::TestApp,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = bearer(
        app.client.request(method, format!("{}{path}", app.address)),
        token,
    );
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("answered")
}

/// A viewer key (`/api/keys`) may read everything but keys, and call the dry run; every
/// other write is 403 and writes nothing; a revoked one is 401.
async fn a_viewer_key_reads_and_dry_runs_but_writes_nothing(backend: Backend) {
    use reqwest::Method;
    let app = secured(backend).await;
    let admin = Some(ADMIN);
    let anna = json(
        post_as(&app, admin, "/api/operators", &json!({"name": "Anna"})).await,
        StatusCode::CREATED,
    )
    .await;
    json(
        post_as(
            &app,
            admin,
            "/api/sources",
            &json!({"name": "Bot", "code": "bot"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    for body in [
        json!({"scope": "admin"}),
        json!({}),
        json!({"scope": "viewer", "label": ""}),
    ] {
        problem(
            post_as(&app, admin, "/api/keys", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let issued = json(
        post_as(
            &app,
            admin,
            "/api/keys",
            &json!({"scope": "viewer", "label": "wall screen"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(issued["scope"], "viewer");
    let viewer = issued["key"].as_str().expect("shown once").to_owned();
    assert!(viewer.starts_with("crm_vk_"));
    assert!(viewer.starts_with(issued["prefix"].as_str().expect("a prefix")));

    for path in [
        "/api/operators",
        "/api/sources/1",
        "/api/queue",
        "/api/sources/1/distribution",
    ] {
        assert_eq!(
            send_as(&app, Method::GET, &viewer, path, None)
                .await
                .status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let dry_run = json!({"operators": [{"operator_id": anna["id"], "weight": 2}], "seed": 1});
    json(
        send_as(
            &app,
            Method::POST,
            &viewer,
            "/api/sources/1/simulate",
            Some(&dry_run),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let refused: [(Method, &str, Option<Value>); 7] = [
        (Method::GET, "/api/keys", None),
        (Method::GET, "/api/sources/1/keys", None),
        (Method::POST, "/api/operators", Some(json!({"name": "Eve"}))),
        (
            Method::PATCH,
            "/api/operators/1",
            Some(json!({"is_active": false})),
        ),
        (
            Method::PUT,
            "/api/sources/1/operators",
            Some(json!({"operators": []})),
        ),
        (
            Method::POST,
            "/api/contacts",
            Some(json!({"external_lead_id": "u", "source_id": 1})),
        ),
        (Method::POST, "/api/keys", Some(json!({"scope": "viewer"}))),
    ];
    for (method, path, body) in refused {
        problem(
            send_as(&app, method.clone(), &viewer, path, body.as_ref()).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    let source = json(get_as(&app, admin, "/api/sources/1").await, StatusCode::OK).await;
    assert_eq!(
        source["operators"],
        json!([]),
        "the refused PUT wrote nothing"
    );
    let operators = json(get_as(&app, admin, "/api/operators").await, StatusCode::OK).await;
    assert_eq!(operators.as_array().map(Vec::len), Some(1));
    assert_eq!(operators[0]["is_active"], true);

    // Listed without its secret, with its last use; revoked, it is refused.
    let keys = json(get_as(&app, admin, "/api/keys").await, StatusCode::OK).await;
    assert_eq!(keys.as_array().map(Vec::len), Some(1));
    assert!(keys[0].get("key").is_none());
    assert_eq!(keys[0]["label"], "wall screen");
    assert!(keys[0]["last_used_at"].is_string(), "{keys}");
    let revoke = format!("/api/keys/{}", issued["id"]);
    assert_eq!(
        send_as(&app, Method::DELETE, ADMIN, &revoke, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    problem(
        send_as(&app, Method::DELETE, ADMIN, &revoke, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    unauthorized(send_as(&app, Method::GET, &viewer, "/api/operators", None).await).await;
}
