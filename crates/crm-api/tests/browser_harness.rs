//! The browser harness itself (tests/common/browser.rs) against pages of its own: that it
//! reads the console's errors, sizes screenshots exactly, and that its waits and inputs work,
//! so a failing page test points at the page and not at the harness.

mod common;

use std::time::Instant;

use common::browser::Browser;
use serde_json::json;

/// A `data:` URL serving `html`, so these tests need no server.
fn page(html: &str) -> String {
    format!("data:text/html,{html}")
}

#[tokio::test(flavor = "multi_thread")]
async fn console_errors_are_read_once_and_only_errors() {
    let started = Instant::now();
    let Some(browser) = Browser::start().await else {
        return;
    };
    eprintln!("Browser::start took {:?}", started.elapsed());
    browser
        .goto(&page(
            "<script>console.log('fine'); console.warn('careful'); console.error('boom'); \
             document.addEventListener('DOMContentLoaded', () => \
             document.body.insertAdjacentHTML('beforeend', '<p id=done>done</p>'));</script>",
        ))
        .await;
    browser.wait_for("#done").await;
    let errors = browser.console_errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("boom"), "{errors:?}");
    assert_eq!(browser.console_errors().await, Vec::<String>::new());

    browser.goto(&page("<p id=quiet>quiet</p>")).await;
    browser.wait_for("#quiet").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn screenshots_are_the_viewport_at_the_size_asked() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    browser
        .goto(&page(
            "<body style='margin:0;background:teal'><p>sized</p></body>",
        ))
        .await;
    for (width, height) in [(1280, 800), (390, 844), (1920, 1080)] {
        let path = browser.screenshot("harness", width, height).await;
        let png = std::fs::read(&path).expect("the screenshot was written");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!((size(16), size(20)), (width, height), "{}", path.display());
        let inner = browser
            .js("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        assert_eq!(inner, json!([width, height]));
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_clicks_fields_and_scripts() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    browser
        .goto(&page(
            "<input id=name><button id=go>go</button><p id=out>nothing</p><p id=gone>here</p>\
             <script>document.getElementById('go').onclick = () => setTimeout(() => { \
             document.getElementById('out').textContent = 'hello ' + \
             document.getElementById('name').value; document.getElementById('gone').remove(); \
             }, 200);</script>",
        ))
        .await;
    browser.fill("#name", "first").await;
    browser.fill("#name", "Ada").await;
    browser.click("#go").await;
    let text = browser
        .wait_text("#out", |t| t.starts_with("hello"), "a greeting")
        .await;
    assert_eq!(text, "hello Ada");
    browser.wait_gone("#gone").await;
    browser
        .wait_until("titled", async |client| {
            client
                .execute("document.title = 'ok'; return true;", vec![])
                .await
                .is_ok()
        })
        .await;
    assert_eq!(
        browser
            .js("return arguments[0] + 1;", vec![json!(41)])
            .await,
        json!(42)
    );
    let later = browser
        .js_async(
            "const done = arguments[arguments.length - 1]; setTimeout(() => done('later'), 50);",
            vec![],
        )
        .await;
    assert_eq!(later, json!("later"));
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.close().await;
}
