//! Webhooks through the real server: a receiver in this test verifies every delivery with
//! the Standard Webhooks reference verifier (the `standardwebhooks` crate, whose signing
//! crm-api's unit tests check against the specification's vectors), fails each event's
//! first three attempts and, deduplicating by `webhook-id`, receives exactly the events the
//! outbox holds, each once (both backends); the deliveries list shows the attempts; a
//! rotation signs with both secrets; 410 switches the endpoint off; internal addresses,
//! other schemes and viewers are refused.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{
    TestApp,
    receiver::{Receiver, receiver, wait_for},
    spawn_app_with_events,
};
use crm_core::{RetrySchedule, Store};
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

crm_store::on_every_backend!(
    a_failing_endpoint_shows_in_the_metrics,
    every_event_arrives_once_verified_after_three_failures,
    a_rotation_signs_with_both_secrets_and_gone_switches_off,
    bad_endpoints_are_refused,
    a_batch_cut_short_by_its_lease_goes_on_in_the_next,
);

/// An app that may call loopback receivers and retries after one second.
async fn app(backend: Backend) -> TestApp {
    spawn_app_with_events(backend, settings()).await
}

fn settings() -> crm_api::EventSettings {
    crm_api::EventSettings {
        webhooks: crm_api::WebhookSettings {
            allow_private: true,
            schedule: RetrySchedule::parse("1,1,1,1").expect("a schedule"),
            poll: Duration::from_millis(50),
            ..crm_api::WebhookSettings::default()
        },
        ..crm_api::EventSettings::default()
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, format!("{}{path}", app.address));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("answered");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Registers `receiver` as an endpoint of every event type, and gives it the secret to
/// verify with; returns the endpoint as created (its secret included, shown this once).
async fn subscribe(app: &TestApp, receiver: &Receiver) -> Value {
    let (status, created) = call(
        app,
        Method::POST,
        "/api/webhooks",
        Some(json!({"url": receiver.url})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().expect("the secret, once");
    receiver
        .secrets
        .lock()
        .expect("lock")
        .push(secret.to_owned());
    created
}

/// Once an endpoint has received everything, its task writes nothing while nothing
/// happens: it used to take and settle its lease every poll, two commits (two fsyncs on
/// SQLite) a poll, forever. Seen from another connection, whose `data_version` moves with
/// every commit that changed the file.
#[tokio::test]
async fn an_endpoint_that_has_caught_up_writes_nothing() {
    let app = app(Backend::Sqlite).await;
    let receiver = receiver(0, 503).await;
    subscribe(&app, &receiver).await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/operators",
        Some(json!({"name": "Anna", "max_active_contacts": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    wait_for(&receiver.seen, "the operator's event delivered", |seen| {
        !seen.accepted.is_empty()
    })
    .await;
    let path = app.sqlite_path().expect("an SQLite file");
    let reader = rusqlite::Connection::open(&path).expect("open the file");
    let version = || -> i64 {
        reader
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .expect("data_version")
    };
    // A quiet stretch of ten polls (the settle of the last batch may still be committing
    // at first: the stretch starts once one passed without a change).
    let mut quiet = 0;
    let mut last = version();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = version();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        if quiet == 10 {
            break;
        }
    }
    assert_eq!(quiet, 10, "the idle endpoint kept committing");
}

/// Events in the outbox after `after`, as `(webhook-id, envelope)`.
async fn outbox_after(store: &crm_store::DbStore, after: u64) -> BTreeMap<String, Value> {
    crm_store::testing::events_after(store, after, 500)
        .await
        .into_iter()
        .map(|e| (e.id(), serde_json::from_str(&e.envelope()).expect("JSON")))
        .collect()
}

async fn every_event_arrives_once_verified_after_three_failures(backend: Backend) {
    let app = app(backend).await;
    let before = app.store.settled_event_head().await.expect("head");
    let receiver = receiver(3, 503).await;
    let created = subscribe(&app, &receiver).await;
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    let (status, listed) = call(&app, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once only"
    );

    // Writes of every kind.
    let (_, op) = call(
        &app,
        Method::POST,
        "/api/operators",
        Some(json!({"name": "Anna", "max_active_contacts": 1})),
    )
    .await;
    let (_, source) = call(
        &app,
        Method::POST,
        "/api/sources",
        Some(json!({"name": "Bot", "code": "bot"})),
    )
    .await;
    let weights = json!({"operators": [{"operator_id": op["id"], "weight": 1}]});
    call(
        &app,
        Method::PUT,
        &format!("/api/sources/{}/operators", source["id"]),
        Some(weights),
    )
    .await;
    let mut contacts = Vec::new();
    for i in 0..3 {
        let body = json!({"external_lead_id": format!("l{i}"), "source_id": source["id"]});
        contacts.push(
            call(&app, Method::POST, "/api/contacts", Some(body))
                .await
                .1,
        );
    }
    call(
        &app,
        Method::POST,
        &format!("/api/contacts/{}/close", contacts[0]["id"]),
        None,
    )
    .await;

    let outbox = outbox_after(&app.store, before).await;
    assert_eq!(outbox.len(), 3 + 3 + 2, "{outbox:?}");
    wait_for(&receiver.seen, "every event", |seen| {
        seen.accepted.len() == outbox.len()
    })
    .await;
    {
        let seen = receiver.seen.lock().expect("lock");
        assert!(
            seen.unverified.is_empty(),
            "unverified: {:?}",
            seen.unverified
        );
        assert!(seen.signatures.iter().all(|&n| n == 1));
        let got: BTreeMap<String, Value> = seen
            .accepted
            .iter()
            .map(|(id, body)| (id.clone(), serde_json::from_str(body).expect("JSON")))
            .collect();
        assert_eq!(got, outbox);
        assert!(
            seen.attempts.values().all(|&n| n == 4),
            "{:?}",
            seen.attempts
        );
    }

    // The deliveries say so too, once the last outcomes are stored (the receiver has
    // answered them; the server stores each just after).
    let every = format!("/api/webhooks/{}/deliveries?limit=100", created["id"]);
    for _ in 0..200 {
        let (_, listed) = call(&app, Method::GET, &every, None).await;
        if listed
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["state"] != "pending"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!("/api/webhooks/{}/deliveries?limit=5", created["id"]);
    let resp = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .expect("answered");
    assert!(
        resp.headers().get("link").is_some(),
        "a full page links to the next"
    );
    let page: Value = resp.json().await.expect("JSON");
    let (_, rest) = call(
        &app,
        Method::GET,
        &format!("{path}&after={}", page[4]["id"]),
        None,
    )
    .await;
    let all: Vec<&Value> = page
        .as_array()
        .expect("a page")
        .iter()
        .chain(rest.as_array().expect("a page"))
        .collect();
    assert_eq!(all.len(), outbox.len());
    for d in &all {
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(d["attempts"], 4);
        assert_eq!(d["last_status"], 204);
        assert!(outbox.contains_key(d["event_id"].as_str().expect("an id")));
    }
    // A delivery sent again by hand keeps its webhook-id.
    let retry = format!(
        "/api/webhooks/{}/deliveries/{}/retry",
        created["id"], all[0]["id"]
    );
    let (status, again) = call(&app, Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["state"], "pending");
    let event_id = all[0]["event_id"].as_str().expect("an id").to_owned();
    wait_for(&receiver.seen, "the redelivery", |seen| {
        seen.attempts[&event_id] == 5
    })
    .await;
}

async fn a_rotation_signs_with_both_secrets_and_gone_switches_off(backend: Backend) {
    let app = app(backend).await;
    let hooked = receiver(0, 500).await;
    let (_, created) = call(
        &app,
        Method::POST,
        "/api/webhooks",
        Some(json!({"url": hooked.url, "event_types": ["operator.created"]})),
    )
    .await;
    let first = created["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(created["event_types"], json!(["operator.created"]));
    let rotate = format!("/api/webhooks/{}/rotate-secret", created["id"]);
    let (status, rotated) = call(&app, Method::POST, &rotate, None).await;
    assert_eq!(status, StatusCode::OK);
    let second = rotated["secret"].as_str().expect("a secret").to_owned();
    assert_ne!(first, second);
    assert!(rotated["previous_secret_valid_until"].is_string());
    // Only the old secret known: still verifies, as the old signature is sent too.
    hooked.secrets.lock().expect("lock").push(first);
    call(
        &app,
        Method::POST,
        "/api/sources",
        Some(json!({"name": "Not sent", "code": "x"})),
    )
    .await;
    call(
        &app,
        Method::POST,
        "/api/operators",
        Some(json!({"name": "Sent", "max_active_contacts": 1})),
    )
    .await;
    wait_for(&hooked.seen, "the operator", |seen| {
        seen.accepted.len() == 1
    })
    .await;
    {
        let seen = hooked.seen.lock().expect("lock");
        assert_eq!(seen.signatures, [2]);
        let body: Value =
            serde_json::from_str(seen.accepted.values().next().expect("one")).expect("JSON");
        assert_eq!(body["type"], "operator.created");
    }

    // An endpoint that answers 410 is switched off and its delivery failed for good.
    let gone = receiver(u32::MAX, 410).await;
    let hook = subscribe(&app, &gone).await;
    call(
        &app,
        Method::POST,
        "/api/operators",
        Some(json!({"name": "Gone", "max_active_contacts": 1})),
    )
    .await;
    let path = format!("/api/webhooks/{}", hook["id"]);
    for _ in 0..200 {
        if call(&app, Method::GET, &path, None).await.1["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, off) = call(&app, Method::GET, &path, None).await;
    assert_eq!(off["enabled"], false);
    assert_eq!(off["disabled_reason"], "gone");
    let (_, deliveries) = call(&app, Method::GET, &format!("{path}/deliveries"), None).await;
    assert_eq!(deliveries[0]["state"], "failed");
    assert_eq!(deliveries[0]["last_status"], 410);
    // Switched on again by hand, and deleted.
    let (_, on) = call(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"enabled": true, "event_types": null})),
    )
    .await;
    assert_eq!(on["enabled"], true);
    assert_eq!(on["disabled_reason"], Value::Null);
    assert_eq!(on["event_types"], Value::Null);
    let (status, _) = call(&app, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn bad_endpoints_are_refused(backend: Backend) {
    // The default settings: internal addresses refused.
    let app = common::spawn_app_on(backend).await;
    for (url, field) in [
        ("http://127.0.0.1:9/hook", "url"),
        ("http://10.1.2.3/hook", "url"),
        ("http://[::1]/hook", "url"),
        ("http://localhost:8000/", "url"),
        ("http://169.254.169.254/latest/meta-data", "url"),
        ("ftp://example.com/hook", "url"),
        ("not a url", "url"),
    ] {
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/webhooks",
            Some(json!({"url": url})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{url}");
    }
    let body = json!({"url": "https://example.com/hook", "event_types": ["contact.created", "contact.opened", 3]});
    let (status, problem) = call(&app, Method::POST, "/api/webhooks", Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("a field"))
        .collect();
    assert_eq!(fields, ["event_types[1]", "event_types[2]"]);
    assert!(
        app.row_counts()
            .await
            .get("webhooks")
            .is_none_or(|&n| n == 0)
    );
    // A public URL is taken (it is only called once events come).
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/webhooks",
        Some(json!({"url": "https://example.com/hook"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Two replicas on one PostgreSQL database send one endpoint's events: each attempt is
/// made by one of them (the batch lease and `SKIP LOCKED` claims), so every event is tried
/// exactly four times (three failures and the success), never twice at once.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_attempt_each_delivery_once() {
    let a = app(Backend::Postgres).await;
    let b = common::spawn_replica_with(&a, settings()).await;
    let hook = receiver(3, 500).await;
    subscribe(&a, &hook).await;
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let body = json!({"name": format!("op{i}"), "max_active_contacts": 1});
        call(app, Method::POST, "/api/operators", Some(body)).await;
    }
    wait_for(&hook.seen, "every event", |seen| seen.accepted.len() == 20).await;
    // Let any extra attempt that might be on its way arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = hook.seen.lock().expect("lock");
    assert!(
        seen.attempts.values().all(|&n| n == 4),
        "{:?}",
        seen.attempts
    );
}

/// `/metrics` shows an endpoint's deliveries waiting for a retry.
async fn a_failing_endpoint_shows_in_the_metrics(backend: Backend) {
    let app = app(backend).await;
    let down = receiver(u32::MAX, 500).await;
    let hook = subscribe(&app, &down).await;
    let before = app.get("/metrics").await.text().await.expect("text");
    let line = format!(
        "crm_webhook_pending_deliveries{{webhook_id=\"{}\"}}",
        hook["id"]
    );
    assert!(before.contains(&format!("{line} 0")), "{before}");
    call(
        &app,
        Method::POST,
        "/api/operators",
        Some(json!({"name": "A", "max_active_contacts": 1})),
    )
    .await;
    wait_for(&down.seen, "a first attempt", |seen| {
        !seen.attempts.is_empty()
    })
    .await;
    let mut text = String::new();
    for _ in 0..200 {
        text = app.get("/metrics").await.text().await.expect("text");
        if text.contains(&format!("{line} 1")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains(&format!("{line} 1")), "{text}");
}

/// A batch sends only what can finish before its lease ends; the rest stays after the
/// cursor for the next lease. Here the request timeout leaves no time in any lease beyond
/// the first `concurrency` sends, so each lease of a batch of 10 sends 2. Every event still
/// arrives exactly once, and nothing is sent twice.
async fn a_batch_cut_short_by_its_lease_goes_on_in_the_next(backend: Backend) {
    let app = spawn_app_with_events(
        backend,
        crm_api::EventSettings {
            webhooks: crm_api::WebhookSettings {
                allow_private: true,
                poll: Duration::from_millis(20),
                // The lease is 45 s: with this timeout no send may start after the first.
                timeout: Duration::from_secs(44),
                concurrency: 2,
                batch: 10,
                ..crm_api::WebhookSettings::default()
            },
            ..crm_api::EventSettings::default()
        },
    )
    .await;
    let before = app.store.settled_event_head().await.expect("head");
    let receiver = receiver(0, 204).await;
    subscribe(&app, &receiver).await;
    for i in 0..25 {
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/operators",
            Some(json!({"name": format!("Operator {i}"), "max_active_contacts": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let expected = outbox_after(&app.store, before).await;
    assert_eq!(expected.len(), 25, "one event per operator created");
    wait_for(&receiver.seen, "every event", |seen| {
        seen.accepted.len() >= expected.len()
    })
    .await;
    let seen = receiver.seen.lock().expect("lock");
    assert!(seen.unverified.is_empty(), "{:?}", seen.unverified);
    let accepted: BTreeMap<String, Value> = seen
        .accepted
        .iter()
        .map(|(id, body)| (id.clone(), serde_json::from_str(body).expect("JSON")))
        .collect();
    assert_eq!(accepted, expected);
    assert!(
        seen.attempts.values().all(|&n| n == 1),
        "an event was sent twice: {:?}",
        seen.attempts
    );
}
