//! `/metrics` after a few registrations, and request ids in responses and logs.

#[macro_use]
mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::{spawn_app, spawn_app_on};
use crm_store::testing::Backend;
use reqwest::StatusCode;

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
    assert!(
        sample(&text, "crm_db_pool_max_connections").is_some_and(|max| max >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("crm_db_pool_connections{state=\"idle\"}"),
        "{text}"
    );
}

/// A `MakeWriter` that appends everything to one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn request_ids_are_echoed_generated_and_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runtime is single-threaded, so the server's tasks log through this too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;

    let given = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("answered");
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");

    let generated = app.get("/api/operators").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32, "a fresh 128-bit id: {id}");

    let bad = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "has space")
        .send()
        .await
        .expect("answered");
    assert_ne!(bad.headers()["x-request-id"], "has space");

    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.contains("trace-me-42"))
        .unwrap_or_else(|| panic!("no log line carries the given id:\n{text}"));
    assert!(
        line.contains("route=/health") && line.contains("status=200"),
        "{line}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&id) && l.contains("route=/api/operators")),
        "no access line with the generated id:\n{text}"
    );
}
