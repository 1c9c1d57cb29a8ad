//! `GET /api/events` through the real server: a client cut off at 100 random points and
//! resumed each time with `Last-Event-ID` receives exactly the outbox, in order, once each,
//! while writes go on (both backends); a type filter; a `reset` after retention pruned
//! what the client asked for; heartbeats and `retry:`; who may subscribe; and on
//! PostgreSQL, a stream on one replica sees what another replica commits.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{TestApp, spawn_app_on, spawn_app_secured};
use crm_core::Store;
use crm_store::testing::Backend;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rand::{RngExt, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

crm_store::on_every_backend!(
    a_stream_cut_at_random_points_resumes_without_gap_or_duplicate,
    a_stream_filters_by_type_and_resets_after_pruning,
    only_the_admin_and_viewers_may_subscribe,
    a_revoked_viewer_keys_stream_ends_and_the_admins_goes_on,
);

/// A complete SSE message.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    event: String,
    data: String,
}

/// Opens the stream after `last` (no header: from now on).
async fn open(
    app: &TestApp,
    token: Option<&str>,
    last: Option<u64>,
    query: &str,
) -> reqwest::Response {
    let mut req = app.client.get(format!("{}/api/events{query}", app.address));
    if let Some(last) = last {
        req = req.header("Last-Event-ID", last.to_string());
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("the stream answers")
}

/// Reads at most `budget` bytes of `resp` (or what arrives before `quiet` passes without
/// a byte), then drops the connection, and returns the messages that arrived whole.
async fn read_cut(
    mut resp: reqwest::Response,
    budget: usize,
    quiet: Duration,
) -> (Vec<Message>, String) {
    let mut raw = Vec::new();
    while raw.len() < budget {
        match tokio::time::timeout(quiet, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => raw.extend_from_slice(&chunk),
            _ => break,
        }
    }
    drop(resp);
    raw.truncate(budget);
    // A client acts on a message only once its blank line arrived.
    let whole = raw
        .windows(2)
        .rposition(|w| w == b"\n\n")
        .map_or(0, |i| i + 2);
    raw.truncate(whole);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let messages = futures_util::stream::iter([Ok::<_, std::io::Error>(raw)])
        .eventsource()
        .filter_map(|m| async move { m.ok() })
        .filter(|m| futures_util::future::ready(!m.data.is_empty()))
        .map(|m| Message {
            id: m.id,
            event: m.event,
            data: m.data,
        })
        .collect()
        .await;
    (messages, text)
}

/// Every event in the outbox, as `(seq, type, envelope)`.
async fn outbox(store: &crm_store::DbStore) -> Vec<(u64, String, Value)> {
    crm_store::testing::events_after(store, 0, 500)
        .await
        .into_iter()
        .map(|e| {
            let envelope = serde_json::from_str(&e.envelope()).expect("JSON");
            (e.seq, e.kind.as_str().to_owned(), envelope)
        })
        .collect()
}

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let resp = app
        .client
        .post(format!("{}{path}", app.address))
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("JSON")
}

/// An operator, a source weighted to it, returns the source's id.
async fn seed(app: &TestApp, max: i64) -> (i64, i64) {
    let operator = post(
        app,
        "/api/operators",
        json!({"name": "Anna", "max_active_contacts": max}),
    )
    .await;
    let source = post(app, "/api/sources", json!({"name": "Bot", "code": "bot"})).await;
    let resp = app
        .put_weights(
            source["id"].as_i64().expect("id"),
            &json!({"operators": [{"operator_id": operator["id"], "weight": 1}]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    (
        operator["id"].as_i64().expect("id"),
        source["id"].as_i64().expect("id"),
    )
}

async fn a_stream_cut_at_random_points_resumes_without_gap_or_duplicate(backend: Backend) {
    let app = Arc::new(spawn_app_on(backend).await);
    let (operator, source) = seed(&app, 5).await;
    // Four writers register and close until the reader has been cut 100 times: contacts
    // queue while the operator is full and drain as others close.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
        writers.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 2_000 {
                let body = json!({"external_lead_id": format!("w{w}-{i}"), "source_id": source});
                let contact = post(&app, "/api/contacts", body).await;
                if i % 2 == 1 {
                    let id = contact["id"].as_i64().expect("id");
                    assert_eq!(app.close_contact(id).await.status(), StatusCode::OK);
                }
                if i % 25 == 24 {
                    let limit = 3 + (i / 25) % 4;
                    let patch = json!({"max_active_contacts": limit});
                    assert_eq!(
                        app.update_operator(operator, &patch).await.status(),
                        StatusCode::OK
                    );
                }
                i += 1;
            }
        });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(26);
    let mut received: Vec<Message> = Vec::new();
    let mut last = 0_u64;
    for _ in 0..100 {
        let resp = open(&app, None, Some(last), "").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let budget = rng.random_range(1..6_000);
        let (messages, _) = read_cut(resp, budget, Duration::from_secs(2)).await;
        if let Some(m) = messages.last() {
            last = m.id.parse().expect("a numeric id");
        }
        received.extend(messages);
    }
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    // The rest, in one last connection, until it is quiet.
    let (messages, _) = read_cut(
        open(&app, None, Some(last), "").await,
        usize::MAX,
        Duration::from_millis(800),
    )
    .await;
    received.extend(messages);

    let outbox = outbox(&app.store).await;
    assert!(
        outbox.len() > 300,
        "only {} events were written",
        outbox.len()
    );
    let got: Vec<(u64, String, Value)> = received
        .iter()
        .map(|m| {
            let envelope: Value = serde_json::from_str(&m.data).expect("data is JSON");
            assert_eq!(envelope["type"], json!(m.event));
            assert_eq!(envelope["seq"], json!(m.id.parse::<u64>().expect("id")));
            (m.id.parse().expect("id"), m.event.clone(), envelope)
        })
        .collect();
    let got_seqs: Vec<u64> = got.iter().map(|e| e.0).collect();
    let want_seqs: Vec<u64> = outbox.iter().map(|e| e.0).collect();
    assert_eq!(
        got_seqs, want_seqs,
        "the stream's sequence differs from the outbox"
    );
    assert_eq!(got, outbox);
}

async fn a_stream_filters_by_type_and_resets_after_pruning(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (_, source) = seed(&app, 5).await;
    for i in 0..3 {
        let c = post(
            &app,
            "/api/contacts",
            json!({"external_lead_id": format!("l{i}"), "source_id": source}),
        )
        .await;
        assert_eq!(
            app.close_contact(c["id"].as_i64().expect("id"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let all = outbox(&app.store).await;
    assert_eq!(all.len(), 3 + 6);
    // Only the closes, from the start.
    let resp = open(&app, None, Some(0), "?types=contact.closed").await;
    let (messages, text) = read_cut(resp, usize::MAX, Duration::from_millis(500)).await;
    assert!(text.starts_with("retry: 2000\n\n"), "{text}");
    let closes: Vec<&str> = messages.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(closes, ["contact.closed"; 3]);
    // Retention keeps the newest two: a client at 1 is told to start again, from the mark.
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let pruned = app
        .store
        .prune_events(future, 2, 1_000)
        .await
        .expect("prune");
    assert_eq!(pruned, 7);
    let resp = open(&app, None, Some(1), "").await;
    let (messages, _) = read_cut(resp, usize::MAX, Duration::from_millis(500)).await;
    let mark = all[6].0;
    assert_eq!(messages[0].event, "reset");
    assert_eq!(messages[0].id, mark.to_string());
    assert_eq!(
        serde_json::from_str::<Value>(&messages[0].data).expect("JSON"),
        json!({"reason": "pruned", "resume_after": mark})
    );
    let rest: Vec<u64> = messages[1..]
        .iter()
        .map(|m| m.id.parse().expect("id"))
        .collect();
    assert_eq!(rest, [all[7].0, all[8].0]);
    // A client at the mark or past it resumes without a reset.
    let (messages, _) = read_cut(
        open(&app, None, Some(mark), "").await,
        usize::MAX,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(messages.len(), 2);
    // A position no event of this database ever had: reset to the newest, then live.
    let newest = all[8].0;
    let resp = open(&app, None, Some(newest + 1_000), "").await;
    let (messages, _) = read_cut(resp, usize::MAX, Duration::from_millis(500)).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].event, "reset");
    assert_eq!(messages[0].id, newest.to_string());
    assert_eq!(
        serde_json::from_str::<Value>(&messages[0].data).expect("JSON"),
        json!({"reason": "unknown", "resume_after": newest})
    );
    // Unknown types and ids that are no numbers are the client's mistake.
    for (last, query) in [
        (None, "?types=contact.created,contact.opened"),
        (None, "?types=nope"),
    ] {
        let resp = open(&app, None, last, query).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = resp.json().await.expect("problem");
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["errors"][0]["field"], "types");
    }
    let resp = app
        .client
        .get(format!("{}/api/events", app.address))
        .header("Last-Event-ID", "evt_3")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn only_the_admin_and_viewers_may_subscribe(backend: Backend) {
    let admin = "events-admin-token";
    let app = spawn_app_secured(backend, admin).await;
    let auth = |req: reqwest::RequestBuilder| req.bearer_auth(admin);
    let issue = |path: String, body: Value| {
        let req = auth(
            app.client
                .post(format!("{}{path}", app.address))
                .json(&body),
        );
        async move {
            let resp = req.send().await.expect("answered");
            assert_eq!(resp.status(), StatusCode::CREATED);
            resp.json::<Value>().await.expect("JSON")["key"]
                .as_str()
                .expect("key")
                .to_owned()
        }
    };
    let source = auth(app.client.post(format!("{}/api/sources", app.address)))
        .json(&json!({"name": "Bot", "code": "bot"}))
        .send()
        .await
        .expect("answered")
        .json::<Value>()
        .await
        .expect("JSON");
    let viewer = issue("/api/keys".into(), json!({"scope": "viewer"})).await;
    let ingest = issue(format!("/api/sources/{}/keys", source["id"]), json!({})).await;
    assert_eq!(
        open(&app, None, Some(0), "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let forbidden = open(&app, Some(&ingest), Some(0), "").await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let problem: Value = forbidden.json().await.expect("problem");
    assert_eq!(problem["code"], "forbidden");
    for token in [admin, viewer.as_str()] {
        let resp = open(&app, Some(token), Some(0), "").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"].to_str().expect("ascii"),
            "text/event-stream"
        );
        let (messages, _) = read_cut(resp, usize::MAX, Duration::from_millis(500)).await;
        assert_eq!(messages[0].event, "source.created", "{token}");
    }
}

/// Revoking a viewer key ends the streams it opened (checked every heartbeat), so a key
/// taken away stops reading at once, not at its next reconnect; the admin's stays.
async fn a_revoked_viewer_keys_stream_ends_and_the_admins_goes_on(backend: Backend) {
    let admin = "events-admin-token";
    let app = common::spawn_app_secured_with_events(
        backend,
        crm_api::Security {
            admin_token: Some(admin.into()),
        },
        crm_api::EventSettings {
            heartbeat: Duration::from_millis(100),
            ..crm_api::EventSettings::default()
        },
    )
    .await;
    let issued: Value = app
        .client
        .post(format!("{}/api/keys", app.address))
        .bearer_auth(admin)
        .json(&json!({"scope": "viewer", "label": "wall"}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let key = issued["key"].as_str().expect("a key");
    let mut viewers = open(&app, Some(key), Some(0), "").await;
    assert_eq!(viewers.status(), StatusCode::OK);
    let mut admins = open(&app, Some(admin), Some(0), "").await;
    assert_eq!(admins.status(), StatusCode::OK);
    // Still issued: the viewer's stream goes on past several heartbeats.
    let beats = tokio::time::timeout(Duration::from_millis(450), async {
        while let Ok(Some(_)) = viewers.chunk().await {}
    })
    .await;
    assert!(beats.is_err(), "the stream of a valid key ended");
    let revoked = app
        .client
        .delete(format!("{}/api/keys/{}", app.address, issued["id"]))
        .bearer_auth(admin)
        .send()
        .await
        .expect("answered");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = viewers.chunk().await {}
    })
    .await
    .expect("the revoked key's stream ends");
    let beat = tokio::time::timeout(Duration::from_secs(10), admins.chunk())
        .await
        .expect("the admin's stream goes on");
    assert!(matches!(beat, Ok(Some(_))), "{beat:?}");
    assert_eq!(
        open(&app, Some(key), None, "").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// A quiet stream sends a comment line at each heartbeat, and ends when the server
/// starts shutting down.
#[tokio::test]
async fn a_quiet_stream_beats_and_ends_at_shutdown() {
    let (store, _db) = common::test_store(Backend::Sqlite).await;
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let settings = crm_api::EventSettings {
        heartbeat: Duration::from_millis(100),
        closing: Some(closing_rx),
        ..crm_api::EventSettings::default()
    };
    let app = crm_api::app_with_events(
        store,
        crm_api::Security::default(),
        crm_api::QueueSettings::default(),
        settings,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(crm_api::server::serve(
        listener,
        app,
        crm_api::server::Limits::DEFAULT,
        std::future::pending(),
        Duration::ZERO,
    ));
    let mut resp = reqwest::get(format!("http://{addr}/api/events"))
        .await
        .expect("stream");
    let mut text = String::new();
    while !text.contains(":\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("a heartbeat within 10 s")
            .expect("read")
            .expect("more");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    closing.send_replace(true);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while resp.chunk().await.expect("read").is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the stream did not end at shutdown");
}

/// Two replicas on one PostgreSQL database: a stream on the first sees what the second
/// commits.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_on_one_replica_sees_what_another_commits() {
    let a = spawn_app_on(Backend::Postgres).await;
    let b = common::spawn_replica(&a).await;
    let mut resp = open(&a, None, None, "").await;
    // The stream has started (its `retry:` arrived) before the write.
    let first = resp.chunk().await.expect("read").expect("retry");
    assert!(first.starts_with(b"retry:"));
    post(
        &b,
        "/api/operators",
        json!({"name": "Through B", "max_active_contacts": 1}),
    )
    .await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("the event within 10 s")
            .expect("read")
            .expect("more");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.starts_with("id: 1\nevent: operator.created\n"),
        "{text}"
    );
    assert!(text.contains("\"name\":\"Through B\""), "{text}");
}
