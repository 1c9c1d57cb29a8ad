//! `/metrics` after a few registrations (request ids: `request_ids.rs`).

#[macro_use]
mod common;

use common::spawn_app_on;
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

on_every_backend!(metrics_report_registrations_loads_and_requests);

/// The value of the first sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

async fn metrics_report_registrations_loads_and_requests(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let anna = app.operator("Anna", 2).await;
    let source = app.source("bot", &[(anna, 1)]).await;
    for lead in ["a", "b", "c"] {
        app.contact(lead, "bot").await;
    }
    // Refused requests are counted under the route they were sent to; only a path that
    // matches no route is `unmatched`.
    let refused = app
        .create_contact(&json!({"external_lead_id": "d", "source_code": "nope"}))
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let invalid = app.create_contact(&json!({"source_code": "bot"})).await;
    let invalid_status = invalid.status().as_u16();
    assert!(invalid.status().is_client_error(), "{invalid_status}");
    assert_eq!(
        app.get("/api/nothing").await.status(),
        StatusCode::NOT_FOUND
    );
    // HEAD as on every other GET path (other methods: hostile_input.rs).
    assert_eq!(
        app.send(Method::HEAD, "/metrics", None).await.status(),
        StatusCode::OK
    );
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain"),
    );
    let text = resp.text().await.expect("text");
    let src = format!("source_id=\"{source}\"");
    let op = format!("operator_id=\"{anna}\"");
    let expect = |series: String, value: f64| {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    };
    expect(
        format!("crm_registrations_total{{outcome=\"assigned\",{src}}}"),
        2.0,
    );
    expect(
        format!("crm_registrations_total{{outcome=\"unassigned\",{src}}}"),
        1.0,
    );
    expect("crm_registration_duration_seconds_count".to_owned(), 3.0);
    expect(format!("crm_operator_open_contacts{{{op}}}"), 2.0);
    expect(format!("crm_operator_capacity{{{op}}}"), 2.0);
    expect(format!("crm_unassigned_backlog{{{src}}}"), 1.0);
    expect(
        "crm_http_requests_total{method=\"POST\",route=\"/api/contacts\",status=\"201\"}"
            .to_owned(),
        3.0,
    );
    expect(
        "crm_http_requests_total{method=\"POST\",route=\"/api/contacts\",status=\"404\"}"
            .to_owned(),
        1.0,
    );
    expect(
        format!(
            "crm_http_requests_total{{method=\"POST\",route=\"/api/contacts\",status=\"{invalid_status}\"}}"
        ),
        1.0,
    );
    expect(
        "crm_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}".to_owned(),
        1.0,
    );
    // The refused registration failed before writing, so no group ran twice
    // (store_suite.rs checks every failing write).
    expect("crm_db_write_group_reruns_total".to_owned(), 0.0);
    assert!(
        sample(&text, "crm_db_pool_max_connections").is_some_and(|max| max >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("crm_db_pool_connections{state=\"idle\"}"),
        "{text}"
    );
}
