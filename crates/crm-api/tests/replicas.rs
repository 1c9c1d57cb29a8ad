//! Two crm-api processes on one PostgreSQL database, registering at once: the capacity
//! limit holds across processes, every contact is stored, and the counters equal the rows.
//! Built only with the `postgres-tests` feature (`cargo xtask test` turns it on).
#![cfg(feature = "postgres-tests")]

mod process;

use std::{sync::Arc, time::Duration};

use crm_store::testing::{Backend, TestDatabase};
use process::{ServerProcess, all_pages, assert_counters_match_rows};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

async fn start_replica(database_url: &str, client: &reqwest::Client) -> ServerProcess {
    ServerProcess::start_in_own_dir(database_url, &[("CRM_DB_MAX_CONNECTIONS", "16")], client).await
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = client.post(url).json(&body).send().await.expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Registers `count` contacts, alternating replicas, at most 64 at a time; returns the
/// created contacts and asserts every answer was a 201.
async fn register_many(
    client: &reqwest::Client,
    bases: &[String; 2],
    source_id: i64,
    prefix: &str,
    count: usize,
) -> Vec<Value> {
    let permits = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..count {
        let client = client.clone();
        let url = format!("{}/api/contacts", bases[i % 2]);
        let permits = Arc::clone(&permits);
        let body =
            json!({"external_lead_id": format!("{prefix}-{}", i % 150), "source_id": source_id});
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.expect("semaphore");
            post(&client, url, body).await
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 201, "registration answered {status}: {body}");
        created.push(body);
    }
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_capacity_limit() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let client = reqwest::Client::new();
    // Both start at once: migrations must run once, under the advisory lock.
    let (a, b) = tokio::join!(
        start_replica(&db.url, &client),
        start_replica(&db.url, &client)
    );
    let bases = [a.base.clone(), b.base.clone()];

    let (_, anna) = post(
        &client,
        format!("{}/api/operators", bases[0]),
        json!({"name": "Anna", "max_active_contacts": 5}),
    )
    .await;
    let (_, boris) = post(
        &client,
        format!("{}/api/operators", bases[1]),
        json!({"name": "Boris", "max_active_contacts": 3}),
    )
    .await;
    let (_, source) = post(
        &client,
        format!("{}/api/sources", bases[0]),
        json!({"name": "Bot", "code": "bot"}),
    )
    .await;
    let source_id = source["id"].as_i64().expect("source id");
    let resp = client
        .put(format!("{}/api/sources/{source_id}/operators", bases[1]))
        .json(&json!({"operators": [
            {"operator_id": anna["id"], "weight": 1},
            {"operator_id": boris["id"], "weight": 1},
        ]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 200);

    let created = register_many(&client, &bases, source_id, "lead", 400).await;
    let assigned = created
        .iter()
        .filter(|c| !c["operator_id"].is_null())
        .count();
    assert_eq!(assigned, 8, "exactly the 5 + 3 places are taken");

    let stored = all_pages(&client, &bases[0], "contacts").await;
    assert_eq!(stored.len(), 400);
    assert_eq!(
        stored.iter().filter(|c| c["operator_id"].is_null()).count(),
        392
    );
    assert_counters_match_rows(&client, &bases[1]).await;

    // Round two: close the assigned contacts while registering more on both replicas.
    let to_close: Vec<i64> = stored
        .iter()
        .filter(|c| !c["operator_id"].is_null())
        .filter_map(|c| c["id"].as_i64())
        .collect();
    let closer = {
        let client = client.clone();
        let bases = bases.clone();
        tokio::spawn(async move {
            for (i, id) in to_close.into_iter().enumerate() {
                let resp = client
                    .post(format!("{}/api/contacts/{id}/close", bases[i % 2]))
                    .send()
                    .await
                    .expect("answered");
                assert_eq!(resp.status().as_u16(), 200, "close of contact {id}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let more = register_many(&client, &bases, source_id, "again", 200).await;
    closer.await.expect("closer");
    assert_eq!(more.len(), 200);
    assert_eq!(all_pages(&client, &bases[0], "contacts").await.len(), 600);
    assert_counters_match_rows(&client, &bases[0]).await;

    drop((a, b));
    db.drop_database().await;
}

/// The Strategies issue's test: two replicas, a smooth source with weights 3:2:1 and room
/// for everyone, 1,000 registrations at once: the smooth state is shared through the
/// database and its picks are one at a time per source, so the shares are exact (within
/// one contact of 500:333:167).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_keep_a_smooth_sources_shares_exact() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let client = reqwest::Client::new();
    let (a, b) = tokio::join!(
        start_replica(&db.url, &client),
        start_replica(&db.url, &client)
    );
    let bases = [a.base.clone(), b.base.clone()];
    let mut operators = Vec::new();
    for name in ["Anna", "Boris", "Vera"] {
        let (status, operator) = post(
            &client,
            format!("{}/api/operators", bases[0]),
            json!({"name": name, "max_active_contacts": 1_000}),
        )
        .await;
        assert_eq!(status, 201, "{operator}");
        operators.push(operator["id"].as_i64().expect("operator id"));
    }
    let (status, source) = post(
        &client,
        format!("{}/api/sources", bases[1]),
        json!({"name": "Bot", "code": "bot", "strategy": "smooth_weighted"}),
    )
    .await;
    assert_eq!(status, 201, "{source}");
    let source_id = source["id"].as_i64().expect("source id");
    let resp = client
        .put(format!("{}/api/sources/{source_id}/operators", bases[0]))
        .json(&json!({"operators": [
            {"operator_id": operators[0], "weight": 3},
            {"operator_id": operators[1], "weight": 2},
            {"operator_id": operators[2], "weight": 1},
        ]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 200);

    let created = register_many(&client, &bases, source_id, "smooth", 1_000).await;
    let count = |id: i64| {
        created
            .iter()
            .filter(|c| c["operator_id"].as_i64() == Some(id))
            .count()
    };
    let counts = [
        count(operators[0]),
        count(operators[1]),
        count(operators[2]),
    ];
    for (got, ideal) in counts.into_iter().zip([500, 333, 167]) {
        assert!(got.abs_diff(ideal) <= 1, "{counts:?} against 500:333:167");
    }
    assert_eq!(counts.iter().sum::<usize>(), 1_000, "everyone assigned");
    // One pick at a time: in id order (ids are taken under the source's lock), each
    // record starts from the credits the one before it left.
    let mut ids: Vec<i64> = created.iter().filter_map(|c| c["id"].as_i64()).collect();
    ids.sort_unstable();
    let mut last = json!([0, 0, 0]);
    for id in ids {
        let history: Value = client
            .get(format!(
                "{}/api/contacts/{id}/decisions",
                bases[(id % 2) as usize]
            ))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON");
        let record = &history[0]["record"];
        assert_eq!(
            record["credit"], last,
            "contact {id} picked from a stale state"
        );
        last = record["credit_after"].clone();
    }
    assert_counters_match_rows(&client, &bases[1]).await;
    drop((a, b));
    db.drop_database().await;
}
