//! A disk that refuses writes, on SQLite: the `crm-api` binary runs with SIGXFSZ ignored,
//! and once it has data the file-size limit (`RLIMIT_FSIZE`, set on the running process
//! with `prlimit`) is lowered to the WAL's current size, so every commit fails to append
//! its frames, as on a full disk. Then:
//!
//! - every registration is answered 503 `unavailable` and `/health` answers 503 with the
//!   reason (finding 6 of the Hardening issue), also after a job that wrote nothing;
//! - once the limit is lifted, `/health` turns 200 again with no client write: the
//!   writer's own probe found that writes commit;
//! - after a SIGKILL and a restart, every contact answered 201 is there, none answered 503
//!   is (a failed commit never comes back), and every counter equals its open rows.

mod process;

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use process::{
    ServerProcess, all_pages, assert_counters_match_rows, client, get_json, request,
    seed_bot_source, sqlite_url,
};
use serde_json::{Value, json};

/// How long the server has to notice that writes work again: the probe runs every 3 s.
const CEILING: Duration = Duration::from_secs(20);

/// Sets the running process's soft file-size limit (`prlimit(1)`, no unsafe code here).
fn set_file_size_limit(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --fsize={soft}");
}

/// Registers a contact for `external_id` with a payload of a few pages.
async fn register(client: &reqwest::Client, base: &str, external_id: &str) -> (u16, Value) {
    let body = json!({
        "external_lead_id": external_id,
        "source_code": "bot",
        "payload": {"text": "x".repeat(9000)},
    });
    let answer = request(client.post(format!("{base}/api/contacts")).json(&body)).await;
    (answer.status, answer.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_answered_503_shown_by_health_and_never_comes_back() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("crm.db");
    let client = client();
    // SIGXFSZ would kill the process at the limit; ignored (inherited through `exec`),
    // the write fails with EFBIG instead, which SQLite reports as an I/O error.
    let mut server = ServerProcess::spawn_through(
        &["sh", "-c", "trap '' XFSZ; exec \"$@\"", "sh"],
        dir.path(),
        "limited.log",
        &sqlite_url(&db),
        &[],
    );
    server.wait_healthy(&client).await;
    let base = server.base.clone();

    seed_bot_source(&client, &base, &[1000, 1000]).await;

    let mut acknowledged = BTreeSet::new();
    for i in 0..5 {
        let id = format!("before-{i}");
        let (status, answer) = register(&client, &base, &id).await;
        assert_eq!(status, 201, "{answer}");
        acknowledged.insert(id);
    }

    // The disk fills: nothing more may be appended to the WAL.
    let wal = std::fs::metadata(dir.path().join("crm.db-wal"))
        .expect("the WAL exists")
        .len();
    set_file_size_limit(server.pid(), &wal.to_string());
    let mut refused = BTreeSet::new();
    for i in 0..5 {
        let id = format!("refused-{i}");
        let (status, answer) = register(&client, &base, &id).await;
        assert_eq!(status, 503, "a registration on a full disk: {answer}");
        assert_eq!(answer["code"], "unavailable", "{answer}");
        refused.insert(id);
    }
    let health = request(client.get(format!("{base}/health"))).await;
    assert_eq!(health.status, 503, "health while commits fail: {health:?}");
    assert_eq!(health.content_type, "application/problem+json");
    assert_eq!(health.body["code"], "unavailable");
    let detail = health.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("write"), "the reason is given: {detail}");
    // A write that fails before writing anything, and reads, in between: a commit with
    // nothing to write proves nothing, so health stays failed.
    let (status, _) = register_unknown_source(&client, &base).await;
    assert_eq!(status, 404);
    get_json(&client, format!("{base}/api/contacts")).await;
    let health = request(client.get(format!("{base}/health"))).await;
    assert_eq!(
        health.status, 503,
        "health after a job that wrote nothing: {health:?}"
    );

    // The disk has room again: the probe notices, with no client write.
    set_file_size_limit(server.pid(), "unlimited");
    let deadline = Instant::now() + CEILING;
    loop {
        if request(client.get(format!("{base}/health"))).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never recovered:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        let id = format!("after-{i}");
        let (status, answer) = register(&client, &base, &id).await;
        assert_eq!(status, 201, "{answer}");
        acknowledged.insert(id);
    }

    server.sigkill();
    let restarted =
        ServerProcess::start(dir.path(), "restarted.log", &sqlite_url(&db), &[], &client).await;
    let stored: BTreeSet<String> = all_pages(&client, &restarted.base, "leads")
        .await
        .iter()
        .map(|lead| lead["external_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(
        stored, acknowledged,
        "exactly the acknowledged registrations are stored (refused: {refused:?})"
    );
    let contacts = all_pages(&client, &restarted.base, "contacts").await;
    assert_eq!(contacts.len(), acknowledged.len());
    assert_counters_match_rows(&client, &restarted.base).await;
}

async fn register_unknown_source(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let body = json!({"external_lead_id": "nowhere", "source_code": "no-such-source"});
    let answer = request(client.post(format!("{base}/api/contacts")).json(&body)).await;
    (answer.status, answer.body)
}
