//! Request ids in responses and in log lines. Alone in its binary: it installs a
//! thread-local log subscriber, and `tracing` caches per call site whether anyone listens,
//! so another test logging at the same time without a subscriber could hide its lines.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::spawn_app;

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
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "lowercase hex: {id}"
    );

    let bad = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "has space")
        .send()
        .await
        .expect("answered");
    assert_ne!(bad.headers()["x-request-id"], "has space");

    // Only `[A-Za-z0-9._-]` is echoed (and logged): a quote, a brace, `=` or a space
    // could end the id's field in a log line and forge others after it. Such an id is
    // replaced by a fresh one.
    let valid = "Trace.me_42-x";
    let echoed = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", valid)
        .send()
        .await
        .expect("answered");
    assert_eq!(echoed.headers()["x-request-id"], valid);
    let forged = [
        r#"x" level=ERROR msg="forged"#,
        r#"{"admin":true}"#,
        "forged=yes",
        "zz,yy",
        "zz/yy",
        "zz:yy",
        "50%zz",
        "tab\tin",
    ];
    let mut replacements = Vec::new();
    for id in forged {
        let resp = app
            .client
            .get(format!("{}/health", app.address))
            .header("x-request-id", id)
            .send()
            .await
            .expect("answered");
        let given = resp.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_ne!(given, id, "{id:?} was echoed");
        assert!(
            given.len() == 32 && given.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id:?} was not replaced by a fresh id: {given:?}"
        );
        replacements.push(given);
    }

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
    assert!(text.contains(valid), "the valid id is logged:\n{text}");
    for id in forged {
        assert!(!text.contains(id), "{id:?} reached the log:\n{text}");
    }
    for given in replacements {
        assert!(
            text.lines().any(|l| l.contains(&given)),
            "the fresh id {given} is logged:\n{text}"
        );
    }
}
