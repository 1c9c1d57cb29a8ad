//! `/metrics` after a few registrations (request ids: `request_ids.rs`).

mod common;

use std::collections::BTreeSet;

use common::{json, spawn_app_on, spawn_app_secured};
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

crm_store::on_every_backend!(
    metrics_report_registrations_loads_and_requests,
    no_request_adds_a_series,
);

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
    expect("crm_queue_drain_latency_seconds_count".to_owned(), 0.0);

    // A close drains the waiting contact: one latency, counted once by the next scrape.
    let contacts = json(app.list_contacts("?status=open").await, StatusCode::OK).await;
    let first = contacts[0]["id"].as_i64().expect("id");
    json(app.close_contact(first).await, StatusCode::OK).await;
    let drained_once = async || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = app.get("/metrics").await.text().await.expect("text");
            let count = sample(&text, "crm_queue_drain_latency_seconds_count");
            if count == Some(1.0) || std::time::Instant::now() > deadline {
                return (count, text);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (count, text) = drained_once().await;
    assert_eq!(count, Some(1.0), "{text}");
    let (again, _) = drained_once().await;
    assert_eq!(again, Some(1.0), "a latency is observed once");
    expect_in(&text, format!("crm_unassigned_backlog{{{src}}}"), None);
}

fn expect_in(text: &str, series: String, value: Option<f64>) {
    assert_eq!(sample(text, &series), value, "{series} in\n{text}");
}

const ADMIN: &str = "admin-token-for-the-metrics-test";

/// The series of a scrape: every sample line's name and labels, without its value.
async fn series(app: &common::TestApp) -> BTreeSet<String> {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("text");
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

/// The `i`-th made-up request: a method of its own, a path of its own and a credential
/// or none. `i % 10` picks the kind, so that any ten consecutive requests hit every
/// route, status and method label the others can.
async fn made_up_request(app: &common::TestApp, i: usize) -> StatusCode {
    let method = match i % 5 {
        // A lower-case spelling of a known method is another method (they are
        // case-sensitive), so it counts as `other` too.
        0 => Method::from_bytes(format!("get{i}").as_bytes()),
        4 => Ok(Method::GET),
        _ => Method::from_bytes(format!("X-MADE-UP-{i}").as_bytes()),
    }
    .expect("a method token");
    let path = match i % 5 {
        0 => format!("/api/operators/{i}"),
        1 => format!("/no/such/path/{i}?q={i}"),
        2 => format!("/metrics?junk={i}"),
        3 => format!("/docs/{i}/x"),
        _ => format!("/api/contacts/{i}/nothing-{i}"),
    };
    let mut req = app.client.request(method, format!("{}{path}", app.address));
    if (i / 5) % 2 == 1 {
        req = req.header("authorization", format!("Bearer {ADMIN}"));
    }
    req.send().await.expect("answered").status()
}

/// Every label of the HTTP metrics comes from a closed set: a client sending made-up
/// methods and paths, with or without a credential, adds no series. The raw method
/// once was a label, and 25,000 such requests (all 401) grew `/metrics` from 54 KB to
/// 49 MB.
async fn no_request_adds_a_series(backend: Backend) {
    let app = spawn_app_secured(backend, ADMIN).await;
    // The scrape's own series first, then one request of each kind.
    series(&app).await;
    let mut statuses = BTreeSet::new();
    for i in 0..10 {
        statuses.insert(made_up_request(&app, i).await);
    }
    let before = series(&app).await;
    for i in 10..410 {
        statuses.insert(made_up_request(&app, i).await);
    }
    let after = series(&app).await;
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "{} series added by 400 requests, e.g. {:?}",
        added.len(),
        &added[..added.len().min(5)]
    );
    assert_eq!(after.len(), before.len());
    // The requests were refused in the ways that count: without a credential (401) and
    // with one, for an unknown path (404) or a method the route does not answer (405).
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
    ] {
        assert!(statuses.contains(&status), "{status} in {statuses:?}");
    }
    // ...and counted, under the closed labels.
    assert!(
        after.iter().any(|s| s.starts_with(
            "crm_http_requests_total{method=\"other\",route=\"unmatched\",status=\"401\"}"
        )),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .all(|s| !s.contains("X-MADE-UP") && !s.contains("no/such")),
        "{after:#?}"
    );
}
