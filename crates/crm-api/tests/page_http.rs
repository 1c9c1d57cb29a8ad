//! The supervisor's page as HTTP serves it: open without a credential (it asks for one
//! itself), every file it loads is there with its type, and every answer carries the
//! policy that keeps it to this origin. What it does in a browser is `tests/page.rs`.

mod common;

use common::spawn_app_secured;
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode, header};

const ADMIN: &str = "admin-token-for-page-tests-0123456789";

async fn secured() -> common::TestApp {
    spawn_app_secured(Backend::Sqlite, ADMIN).await
}

async fn fetch(app: &common::TestApp, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, format!("{}{path}", app.address))
        .send()
        .await
        .expect("answered")
}

fn header_of<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{} has no {name}", resp.url()))
}

/// The files a text refers to: `src="/assets/…"`, `href="/assets/…"` and the modules'
/// `from "./….js"` imports.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (marker, prefix) in [("\"/assets/", "/assets/"), ("from \"./", "/assets/")] {
        let mut rest = text;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let end = rest.find('"').expect("a closing quote");
            found.push(format!("{prefix}{}", &rest[..end]));
            rest = &rest[end..];
        }
    }
    found
}

#[tokio::test]
async fn the_page_and_everything_it_loads_is_served_without_a_credential() {
    let app = secured().await;
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec!["/".to_owned(), "/dashboard".to_owned()];
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let resp = fetch(&app, Method::GET, &path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let policy = header_of(&resp, "content-security-policy");
        assert!(policy.contains("default-src 'self'"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(header_of(&resp, "x-content-type-options"), "nosniff");
        let wanted = match path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            _ => "text/html",
        };
        assert!(
            header_of(&resp, "content-type").starts_with(wanted),
            "{path} is served as {}",
            header_of(&resp, "content-type")
        );
        let text = resp.text().await.expect("a body");
        todo.extend(references(&text));
    }
    // The page, its stylesheet, its icon and all five modules were reached.
    assert!(seen.len() >= 9, "{seen:?}");
    assert!(seen.contains("/assets/drawer.js"), "{seen:?}");
}

#[tokio::test]
async fn the_page_answers_get_and_head_only_and_revalidates_with_its_etag() {
    let app = secured().await;
    let head = fetch(&app, Method::HEAD, "/").await;
    assert_eq!(head.status(), StatusCode::OK);
    let post = fetch(&app, Method::POST, "/dashboard").await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header_of(&post, "allow"), "GET, HEAD");
    assert_eq!(
        fetch(&app, Method::GET, "/dashboard/").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        fetch(&app, Method::GET, "/assets/nothing.js")
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "a path that is not the page's is guarded like any other"
    );

    let first = fetch(&app, Method::GET, "/assets/app.js").await;
    assert_eq!(header_of(&first, "cache-control"), "no-cache");
    let etag = header_of(&first, "etag").to_owned();
    let again = app
        .client
        .get(format!("{}/assets/app.js", app.address))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}
