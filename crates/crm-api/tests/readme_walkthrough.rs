//! Runs the README's curl walkthrough, line by line, against a live server, so the README
//! cannot go stale: every command must succeed (`curl -f` fails on an HTTP error) and the
//! state it leaves must be the one the README describes.

mod common;

use reqwest::StatusCode;

fn walkthrough() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("```sh walkthrough\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```sh walkthrough block");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn readme_walkthrough_works_as_written() {
    let app = common::spawn_app().await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let lines = walkthrough();
    assert!(lines.len() >= 10, "the walkthrough lost its steps");
    for line in &lines {
        assert!(line.starts_with("curl "), "not a curl command: {line}");
        let command = line.replace("localhost:8000", &host);
        let output = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .await
            .expect("run sh");
        assert!(
            output.status.success(),
            "`{line}` failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The state the walkthrough describes: one lead with two contacts, the first closed,
    // the second now Boris's; then a contact that waited and was served.
    let lead = common::json(app.get_lead(1).await, StatusCode::OK).await;
    let contacts = lead["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 3);
    assert_eq!(contacts[0]["status"], "closed");
    assert_eq!(contacts[1]["operator_id"], 2);
    assert_eq!(contacts[1]["payload"], "again");
    // The lead came back after the source turned sticky: to its owner, Boris.
    assert_eq!(contacts[2]["operator_id"], 2);
    assert_eq!(contacts[2]["payload"], "back again");
    let stats = common::json(app.operator_stats().await, StatusCode::OK).await;
    let open: i64 = stats
        .as_array()
        .expect("stats")
        .iter()
        .map(|s| s["open_contacts"].as_i64().expect("open"))
        .sum();
    assert_eq!(
        open, 3,
        "the reassigned contact, the drained one and the returning lead's are open"
    );
    // Contact 4 waited while Anna was full and took her place when contact 3 closed.
    let drained = common::json(app.get_contact(4).await, StatusCode::OK).await;
    assert_eq!(drained["operator_id"], 1, "the waiting contact was served");
    let closed = common::json(app.get_contact(3).await, StatusCode::OK).await;
    assert_eq!(closed["status"], "closed");
    let queue = common::json(app.get("/api/queue").await, StatusCode::OK).await;
    assert_eq!(queue, serde_json::json!([]), "nothing waits any more");
}
