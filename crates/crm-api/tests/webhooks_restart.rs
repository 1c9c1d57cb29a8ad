//! Webhook deliveries survive a restart: the `crm-api` binary is killed after every event's
//! first (failed) attempt and started again on the same database; the receiver, which
//! fails each event's first three attempts and verifies every delivery with the Standard
//! Webhooks reference verifier, then receives every event, each once after deduplicating
//! by `webhook-id`. On SQLite, and on PostgreSQL under `cargo xtask test`.

mod common;
mod process;

use common::receiver::{receiver, wait_for};
use crm_store::testing::{Backend, TestDatabase};
use process::{ServerProcess, client, get_json, post};
use serde_json::json;

const ENV: [(&str, &str); 2] = [
    ("CRM_WEBHOOK_ALLOW_PRIVATE", "true"),
    // The first retry 4 s on: time to kill the server between the first attempts and it.
    ("CRM_WEBHOOK_RETRY_SCHEDULE", "4,2,2,2"),
];

crm_store::on_every_backend!(deliveries_survive_a_restart_between_attempts);

async fn deliveries_survive_a_restart_between_attempts(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client();
    let server = ServerProcess::start(dir.path(), "first.log", &db.url, &ENV, &client).await;
    let base = server.base.clone();
    let hook = receiver(3, 500).await;
    let created = post(
        &client,
        format!("{base}/api/webhooks"),
        json!({"url": hook.url}),
    )
    .await;
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    hook.secrets.lock().expect("lock").push(secret);
    post(
        &client,
        format!("{base}/api/operators"),
        json!({"name": "Anna", "max_active_contacts": 5}),
    )
    .await;
    let source = post(
        &client,
        format!("{base}/api/sources"),
        json!({"name": "Bot", "code": "bot"}),
    )
    .await;
    for i in 0..3 {
        post(
            &client,
            format!("{base}/api/contacts"),
            json!({"external_lead_id": format!("l{i}"), "source_id": source["id"]}),
        )
        .await;
    }
    // Five events; once each has failed once and the failures are stored (the deliveries
    // list shows them), the server dies before any retry is due (4 s later). A kill before
    // that commit would leave the endpoint's lease to run out first (45 s).
    wait_for(&hook.seen, "every first attempt", |seen| {
        seen.attempts.len() == 5
    })
    .await;
    let deliveries = format!("{base}/api/webhooks/{}/deliveries", created["id"]);
    for _ in 0..200 {
        let stored = get_json(&client, deliveries.clone()).await;
        if stored.as_array().is_some_and(|d| d.len() == 5) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.sigkill();
    let restarted = ServerProcess::start(dir.path(), "second.log", &db.url, &ENV, &client).await;
    wait_for(&hook.seen, "every event", |seen| seen.accepted.len() == 5).await;
    {
        let seen = hook.seen.lock().expect("lock");
        assert!(seen.unverified.is_empty(), "{:?}", seen.unverified);
        assert!(
            seen.attempts.values().all(|&n| n >= 4),
            "{:?}",
            seen.attempts
        );
        let ids: Vec<&String> = seen.accepted.keys().collect();
        assert_eq!(ids.len(), 5);
    }
    // The receiver has answered the last attempt; the server stores its outcome just after.
    let listed = format!(
        "{}/api/webhooks/{}/deliveries",
        restarted.base, created["id"]
    );
    let mut deliveries = get_json(&client, listed.clone()).await;
    for _ in 0..200 {
        let settled = deliveries
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["state"] != "pending"));
        if settled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        deliveries = get_json(&client, listed.clone()).await;
    }
    let states: Vec<&str> = deliveries
        .as_array()
        .expect("a page")
        .iter()
        .map(|d| d["state"].as_str().expect("a state"))
        .collect();
    // One row per event: a batch's rows commit with the cursor that moves past it, so a
    // batch cut short by the kill is sent again whole and stored once.
    assert_eq!(states, ["succeeded"; 5], "{deliveries}");
}
