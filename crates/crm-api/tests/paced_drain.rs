//! Fair pacing through the real binary: `max_assignments_per_minute` on create and
//! `PATCH` (a number sets it, `null` clears it, leaving it out keeps it, anything else is
//! 422), and the drain the server schedules for the moment a paced operator's bucket
//! refills, with the sweep far away, so the queue does not wait for it.

mod process;

use std::time::{Duration, Instant};

use process::{ServerProcess, client, get_json, post, request, sqlite_url};
use serde_json::{Value, json};

/// 30 per minute: a burst of 30, then one every 2 s.
const RATE: i64 = 30;

#[tokio::test]
async fn a_paced_operator_takes_its_burst_and_the_server_drains_when_it_refills() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client();
    let server = ServerProcess::start(
        dir.path(),
        "server.log",
        &sqlite_url(&dir.path().join("crm.db")),
        &[("CRM_QUEUE_SWEEP_SECONDS", "3600")],
        &client,
    )
    .await;
    let base = &server.base;

    let operator = post(
        &client,
        format!("{base}/api/operators"),
        json!({"name": "Ann", "is_active": false, "max_active_contacts": 100,
               "max_assignments_per_minute": RATE}),
    )
    .await;
    assert_eq!(operator["max_assignments_per_minute"], RATE);
    let id = operator["id"].as_i64().expect("id");
    let patch = async |body: Value| {
        request(
            client
                .patch(format!("{base}/api/operators/{id}"))
                .json(&body),
        )
        .await
    };
    // Leaving it out keeps it; `null` clears it; a number sets it again.
    assert_eq!(
        patch(json!({"name": "Anna"})).await.body["max_assignments_per_minute"],
        RATE
    );
    assert_eq!(
        patch(json!({"max_assignments_per_minute": null}))
            .await
            .body["max_assignments_per_minute"],
        Value::Null
    );
    for bad in [json!(0), json!(60_001), json!("30"), json!(1.5)] {
        let refused = patch(json!({"max_assignments_per_minute": bad})).await;
        assert_eq!(refused.status, 422, "{bad}: {refused:?}");
        assert_eq!(refused.body["code"], "validation_failed");
        assert_eq!(
            refused.body["errors"][0]["field"],
            "max_assignments_per_minute"
        );
    }
    assert_eq!(
        patch(json!({"max_assignments_per_minute": RATE}))
            .await
            .body["max_assignments_per_minute"],
        RATE
    );

    let source = post(
        &client,
        format!("{base}/api/sources"),
        json!({"name": "Bot", "code": "bot"}),
    )
    .await;
    let source = source["id"].as_i64().expect("source id");
    let weights = request(
        client
            .put(format!("{base}/api/sources/{source}/operators"))
            .json(&json!({"operators": [{"operator_id": id, "weight": 1}]})),
    )
    .await;
    assert_eq!(weights.status, 200);
    let mut contacts = Vec::new();
    for i in 0..=RATE {
        let c = post(
            &client,
            format!("{base}/api/contacts"),
            json!({"external_lead_id": format!("lead-{i}"), "source_id": source}),
        )
        .await;
        contacts.push(c["id"].as_i64().expect("contact id"));
    }

    // Switched on: the drain in the same unit of work gives it its burst, the oldest 30.
    let on = patch(json!({"is_active": true})).await;
    assert_eq!(on.status, 200);
    assert_eq!(on.body["active_contacts"], RATE);
    let last = contacts[contacts.len() - 1];
    let contact = get_json(&client, format!("{base}/api/contacts/{last}")).await;
    assert_eq!(
        contact["operator_id"],
        Value::Null,
        "the 31st waits for a refill"
    );

    // About 2 s later its bucket admits one more, and the server drains then, not at the
    // sweep an hour away.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let contact = get_json(&client, format!("{base}/api/contacts/{last}")).await;
        if contact["operator_id"] == id {
            break;
        }
        assert!(Instant::now() < deadline, "never drained: {contact}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = get_json(&client, format!("{base}/api/contacts/{last}/decisions")).await;
    let paths: Vec<&str> = history
        .as_array()
        .map(|items| items.iter().filter_map(|e| e["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(paths, ["queued", "drained"], "{history}");
}
