//! One SQLite file, one writing process, by the file itself: while a server runs on a
//! database, a second server on the same file exits with a clear message, whether it
//! names the file by the same path, through a symlink or through a hard link. (A lock
//! taken on a path, canonical or not, misses a hard link; the server locks the file.)

mod process;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use process::{ServerProcess, client, sqlite_url};

/// Starts a second server on `db` and asserts it exits, unsuccessfully, saying the
/// database is in use.
async fn assert_refused(dir: &Path, name: &str, db: &Path) {
    let mut second = ServerProcess::spawn(dir, &format!("{name}.log"), &sqlite_url(db), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a second server on the same file ({name}) kept running:\n{}",
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = second.stderr();
    assert!(
        !status.success() && err.contains("in use"),
        "a second server on the same file ({name}) must exit with a clear message: {status} {err}"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_file_by_any_path_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("crm.db");
    let client = client();
    let mut first =
        ServerProcess::start(dir.path(), "first.log", &sqlite_url(&db), &[], &client).await;

    let symlink = dir.path().join("via-symlink.db");
    std::os::unix::fs::symlink(&db, &symlink).expect("a symlink");
    let hard_link = dir.path().join("via-hard-link.db");
    std::fs::hard_link(&db, &hard_link).expect("a hard link");

    assert_refused(dir.path(), "same-path", &db).await;
    assert_refused(dir.path(), "symlink", &symlink).await;
    assert_refused(dir.path(), "hard-link", &hard_link).await;

    // The first one never noticed.
    first.assert_alive();
    let health = client
        .get(format!("{}/health", first.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(health.status(), 200);
}
