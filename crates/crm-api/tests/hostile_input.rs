//! Hostile input over HTTP: ids that do not fit, bodies that are too deep, too large, not
//! UTF-8 or not JSON at all, strings that look like SQL and strings with control
//! characters. Each is answered with a problem (never a 5xx), and a rejected request
//! writes nothing.

mod common;

use common::{TestApp, fields, json, problem, spawn_app, spawn_app_on};
use crm_store::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// The largest body the server reads (1 MiB).
const MAX_BODY: usize = 1024 * 1024;

/// An id past `i64::MAX`, one at `i64::MAX + 1`, and one below `i64::MIN`.
const OUT_OF_RANGE: [&str; 3] = [
    "99999999999999999999",
    "9223372036854775808",
    "-9223372036854775809",
];

/// Ids that are not integers at all (percent-encoded where a URL needs it), or integers
/// spelled other than as digits with an optional `-` (`+1`, ` 1`, `1.0`).
const NOT_NUMERIC: [&str; 16] = [
    "abc", "1.5", "1e3", "0x10", "%20", "1%20", "one", "+1", "%2B1", "%201", "1.0", "-", "--1",
    "1%00", "%091", "1_000",
];

crm_store::on_every_backend!(
    control_characters_in_identifiers_names_codes_and_labels_are_422_and_write_nothing,
    control_characters_in_payloads_are_stored_and_read_back,
);

/// Every operation with an id in its path, and a body it would accept.
fn operations_with_an_id() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/operators/{}", None),
        (
            Method::PATCH,
            "/api/operators/{}",
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/api/operators/{}", None),
        (Method::GET, "/api/sources/{}", None),
        (Method::PATCH, "/api/sources/{}", Some(json!({"name": "x"}))),
        (Method::DELETE, "/api/sources/{}", None),
        (
            Method::PUT,
            "/api/sources/{}/operators",
            Some(json!({"operators": []})),
        ),
        (Method::GET, "/api/sources/{}/keys", None),
        (
            Method::POST,
            "/api/sources/{}/keys",
            Some(json!({"label": "x"})),
        ),
        (Method::DELETE, "/api/sources/{}/keys/1", None),
        (Method::GET, "/api/leads/{}", None),
        (Method::GET, "/api/contacts/{}", None),
        (Method::POST, "/api/contacts/{}/close", None),
        (
            Method::POST,
            "/api/contacts/{}/assign",
            Some(json!({"operator_id": 1})),
        ),
    ]
}

/// Everything the API lists, to show that a rejected request changed nothing.
async fn snapshot(app: &TestApp) -> Value {
    // Source 1's keys, or the 404 while there is no source 1.
    let keys = app.get("/api/sources/1/keys").await;
    let keys = json!([keys.status().as_u16(), keys.text().await.expect("a body")]);
    json!({
        "operators": json(app.list_operators("").await, StatusCode::OK).await,
        "sources": json(app.list_sources().await, StatusCode::OK).await,
        "leads": json(app.list_leads("").await, StatusCode::OK).await,
        "contacts": json(app.list_contacts("").await, StatusCode::OK).await,
        "keys": keys,
    })
}

/// An operator with a source giving it all contacts, and one contact: ids 1 exist.
async fn seeded() -> (TestApp, Value) {
    seeded_on(Backend::Sqlite).await
}

/// [`seeded`] on a fresh database of `backend`.
async fn seeded_on(backend: Backend) -> (TestApp, Value) {
    let app = spawn_app_on(backend).await;
    let operator = app.operator("Ann", 5).await;
    app.source("bot", &[(operator, 1)]).await;
    app.contact("lead-1", "bot").await;
    let before = snapshot(&app).await;
    (app, before)
}

#[tokio::test]
async fn ids_outside_i64_are_422_on_every_operation_and_write_nothing() {
    let (app, before) = seeded().await;
    for (method, template, body) in operations_with_an_id() {
        for id in OUT_OF_RANGE {
            let path = template.replace("{}", id);
            let resp = app.send(method.clone(), &path, body.as_ref()).await;
            let problem =
                problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
            assert_eq!(fields(&problem), ["id"], "{method} {path}");
        }
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn non_numeric_ids_are_422_on_every_operation_and_write_nothing() {
    let (app, before) = seeded().await;
    for (method, template, body) in operations_with_an_id() {
        for id in NOT_NUMERIC {
            let path = template.replace("{}", id);
            let resp = app.send(method.clone(), &path, body.as_ref()).await;
            let problem =
                problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
            assert_eq!(fields(&problem), ["id"], "{method} {path}");
        }
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn bad_key_ids_are_422_naming_key_id() {
    let (app, before) = seeded().await;
    for id in OUT_OF_RANGE.iter().chain(&NOT_NUMERIC) {
        let path = format!("/api/sources/1/keys/{id}");
        let resp = app.send(Method::DELETE, &path, None).await;
        let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&body), ["key_id"], "{path}");
    }
    // Path parameters are read in order: the first bad one is named.
    let resp = app
        .send(Method::DELETE, "/api/sources/x/keys/y", None)
        .await;
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&body), ["id"]);
    let resp = app
        .send(Method::DELETE, "/api/sources/1/keys/0", None)
        .await;
    problem(resp, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn ids_in_range_that_do_not_exist_are_404() {
    let (app, before) = seeded().await;
    for (method, template, body) in operations_with_an_id() {
        for id in ["0", "-1", "9223372036854775807", "-9223372036854775808"] {
            let path = template.replace("{}", id);
            let resp = app.send(method.clone(), &path, body.as_ref()).await;
            problem(resp, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn out_of_range_query_ids_are_422() {
    let (app, _) = seeded().await;
    for param in ["operator_id", "source_id", "lead_id", "after"] {
        for value in OUT_OF_RANGE.iter().chain(&NOT_NUMERIC[..2]) {
            let query = format!("?{param}={value}");
            let resp = app.list_contacts(&query).await;
            let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
            assert_eq!(fields(&body), [param], "{query}");
        }
    }
    let resp = app.list_leads("?after=99999999999999999999").await;
    problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    let (app, before) = seeded().await;
    for (path, expected) in [
        (
            "/api/operators?colour=blue&is_active=true&x[]=1",
            "operators",
        ),
        ("/api/sources?page=2&sort=-id", "sources"),
        ("/api/leads?external_idx=nope&limit=100", "leads"),
        ("/api/contacts?state=closed&limit=100&%00=%FF", "contacts"),
    ] {
        let listed = json(app.get(path).await, StatusCode::OK).await;
        assert_eq!(listed, before[expected], "{path}");
    }
    json(app.get("/api/operators/1?drop=table").await, StatusCode::OK).await;
    json(app.get("/health?verbose=1").await, StatusCode::OK).await;
    // On writes too: the parameter changes nothing about the request.
    let resp = app
        .send(
            Method::POST,
            "/api/operators?is_active=false&max_active_contacts=0",
            Some(&json!({"name": "Bo"})),
        )
        .await;
    let created = json(resp, StatusCode::CREATED).await;
    assert_eq!(created["is_active"], true);
    assert_eq!(created["max_active_contacts"], 10);
}

/// `depth` nested arrays: `[[[…]]]`.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn deeply_nested_json_is_400_malformed_json_and_writes_nothing() {
    let (app, before) = seeded().await;
    let deep = nested_arrays(10_000);
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let bodies = [
        // In the payload of a contact, where any JSON is otherwise welcome.
        format!(r#"{{"external_lead_id": "deep", "source_code": "bot", "payload": {deep}}}"#),
        format!(
            r#"{{"external_lead_id": "deep", "source_code": "bot", "payload": {deep_objects}}}"#
        ),
        // As a whole body, and as an unknown field that would otherwise be ignored.
        deep.clone(),
        format!(r#"{{"external_lead_id": "deep", "source_code": "bot", "extra": {deep}}}"#),
    ];
    for body in bodies {
        let resp = app
            .send_raw(
                Method::POST,
                "/api/contacts",
                Some("application/json"),
                body,
            )
            .await;
        problem(resp, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    for (method, path) in [
        (Method::POST, "/api/operators"),
        (Method::PATCH, "/api/operators/1"),
        (Method::PUT, "/api/sources/1/operators"),
        (Method::POST, "/api/contacts/1/assign"),
    ] {
        let body = format!(r#"{{"operators": {deep}, "name": {deep}}}"#);
        let resp = app
            .send_raw(method.clone(), path, Some("application/json"), body)
            .await;
        problem(resp, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    // The server is still there, and nothing changed.
    json(app.health().await, StatusCode::OK).await;
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn moderately_nested_payloads_are_stored_and_read_back() {
    let (app, _) = seeded().await;
    let payload: Value = serde_json::from_str(&nested_arrays(100)).expect("valid JSON");
    let body = json!({"external_lead_id": "nested", "source_code": "bot", "payload": payload});
    let created = json(app.create_contact(&body).await, StatusCode::CREATED).await;
    assert_eq!(created["payload"], payload);
    let id = created["id"].as_i64().expect("an id");
    let read = json(app.get_contact(id).await, StatusCode::OK).await;
    assert_eq!(read["payload"], payload);
}

/// A JSON object of exactly `len` bytes that creates an operator (the padding is an
/// unknown field, which is ignored).
fn operator_body_of(len: usize) -> String {
    let frame = r#"{"name": "Big", "pad": ""}"#.len();
    format!(r#"{{"name": "Big", "pad": "{}"}}"#, "x".repeat(len - frame))
}

#[tokio::test]
async fn bodies_over_one_mib_are_413_and_write_nothing() {
    let app = spawn_app().await;
    let before = snapshot(&app).await;
    for len in [MAX_BODY + 1, 2 * MAX_BODY] {
        let body = operator_body_of(len);
        assert_eq!(body.len(), len);
        let resp = app
            .send_raw(
                Method::POST,
                "/api/operators",
                Some("application/json"),
                body,
            )
            .await;
        problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    // Also on a path whose id is bad, and with a content type that is wrong: the size
    // is checked first.
    let resp = app
        .send_raw(
            Method::PATCH,
            "/api/operators/x",
            Some("text/plain"),
            operator_body_of(MAX_BODY + 1),
        )
        .await;
    problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(snapshot(&app).await, before);

    // Exactly 1 MiB is still read.
    let body = operator_body_of(MAX_BODY);
    let resp = app
        .send_raw(
            Method::POST,
            "/api/operators",
            Some("application/json"),
            body,
        )
        .await;
    json(resp, StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_chunked_body_over_one_mib_is_413_and_writes_nothing() {
    let app = spawn_app().await;
    let before = snapshot(&app).await;
    let addr = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/operators HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let body = operator_body_of(MAX_BODY + 1024);
    let mut request = head.into_bytes();
    for chunk in body.as_bytes().chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer before it has read everything; a refused write is fine.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 413 "),
        "{}",
        &response[..response.len().min(500)]
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{response}"
    );
    assert!(
        response.contains(r#""code":"payload_too_large""#),
        "{response}"
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn invalid_utf8_is_400_malformed_json_and_writes_nothing() {
    let (app, before) = seeded().await;
    let cases: [(Method, &str, &[u8]); 5] = [
        (Method::POST, "/api/operators", b"{\"name\": \"\xff\xfe\"}"),
        (
            Method::POST,
            "/api/operators",
            b"{\"name\": \"Ann\", \"x\": \"\xc3\x28\"}",
        ),
        (
            Method::PATCH,
            "/api/sources/1",
            b"{\"name\": \"\xed\xa0\x80\"}",
        ),
        (
            Method::POST,
            "/api/contacts",
            b"{\"external_lead_id\": \"\xc0\xaf\", \"source_code\": \"bot\"}",
        ),
        (
            Method::POST,
            "/api/contacts",
            b"{\"external_lead_id\": \"ok\", \"source_code\": \"bot\", \"payload\": \"\x80\"}",
        ),
    ];
    for (method, path, body) in cases {
        let resp = app
            .send_raw(
                method.clone(),
                path,
                Some("application/json"),
                body.to_vec(),
            )
            .await;
        problem(resp, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_and_writes_nothing() {
    let (app, before) = seeded().await;
    let valid = r#"{"name": "Ann", "code": "x", "operators": [], "operator_id": 1,
                    "external_lead_id": "x", "source_code": "bot"}"#;
    for (method, path) in [
        (Method::POST, "/api/operators"),
        (Method::PATCH, "/api/operators/1"),
        (Method::POST, "/api/sources"),
        (Method::PATCH, "/api/sources/1"),
        (Method::PUT, "/api/sources/1/operators"),
        (Method::POST, "/api/contacts"),
        (Method::POST, "/api/contacts/1/assign"),
        (Method::POST, "/api/sources/1/keys"),
    ] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/xml"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("json"),
            // JSON in another encoding than UTF-8.
            Some("application/json; charset=latin1"),
            Some("application/json; charset=ISO-8859-1"),
            Some("application/json;charset=utf-16"),
            Some("application/json; charset=\"us-ascii\""),
        ] {
            let resp = app
                .send_raw(method.clone(), path, content_type, valid)
                .await;
            let body = problem(
                resp,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
            assert!(
                body.get("errors").is_none(),
                "{method} {path} {content_type:?}: {body}"
            );
        }
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn undeclared_methods_are_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::PUT, "/api/operators", "GET, HEAD, POST"),
        (Method::DELETE, "/api/operators", "GET, HEAD, POST"),
        (Method::DELETE, "/api/contacts", "GET, HEAD, POST"),
        (Method::POST, "/api/operators/1", "GET, HEAD, PATCH, DELETE"),
        (
            Method::TRACE,
            "/api/sources/abc/",
            "GET, HEAD, PATCH, DELETE",
        ),
        (Method::GET, "/api/sources/1/operators", "PUT"),
        (Method::GET, "/api/contacts/1/close", "POST"),
        (Method::OPTIONS, "/api/stats/operators", "GET, HEAD"),
        (Method::POST, "/health", "GET, HEAD"),
        (Method::POST, "/metrics", "GET, HEAD"),
        (Method::POST, "/docs", "GET, HEAD"),
        (Method::DELETE, "/docs/oauth-receiver.html", "GET, HEAD"),
        (Method::PUT, "/openapi.json", "GET, HEAD"),
        (Method::PUT, "/api/sources/1/keys", "GET, HEAD, POST"),
        (Method::GET, "/api/sources/1/keys/1", "DELETE"),
    ] {
        let resp = app.send(method.clone(), path, None).await;
        let header = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
    }
}

/// Strings that would break a query built by pasting text into SQL.
const SQL: [&str; 6] = [
    "'; DROP TABLE contacts; --",
    "Robert'); DROP TABLE operators; --",
    "1' OR '1'='1",
    "\"; DELETE FROM leads WHERE \"\"=\"",
    "x'); UPDATE operators SET open_contacts = 0; --",
    "%' OR 1=1 -- \\",
];

#[tokio::test]
async fn sql_looking_strings_are_stored_verbatim() {
    let app = spawn_app().await;
    for (i, text) in SQL.iter().enumerate() {
        // Names (trimmed, otherwise kept).
        let resp = app
            .create_operator(&json!({"name": text, "max_active_contacts": 1000}))
            .await;
        let operator = json(resp, StatusCode::CREATED).await;
        assert_eq!(operator["name"], *text);
        let operator_id = operator["id"].as_i64().expect("an id");
        let read = json(app.get_operator(operator_id).await, StatusCode::OK).await;
        assert_eq!(read["name"], *text);

        // Codes allow only `[A-Za-z0-9_.-]`: `--` is one, a quote is refused with 422.
        let code = format!("--{i}.DROP_TABLE-sources--");
        let resp = app
            .create_source(&json!({"name": text, "code": code}))
            .await;
        let source = json(resp, StatusCode::CREATED).await;
        assert_eq!(
            (&source["name"], &source["code"]),
            (&json!(text), &json!(code))
        );
        let source_id = source["id"].as_i64().expect("an id");
        let weights = json!({"operators": [{"operator_id": operator_id, "weight": 1}]});
        json(app.put_weights(source_id, &weights).await, StatusCode::OK).await;
        let path = format!("/api/sources/{source_id}/keys");
        let resp = app
            .send(Method::POST, &path, Some(&json!({"label": text})))
            .await;
        assert_eq!(json(resp, StatusCode::CREATED).await["label"], *text);
        let keys = json(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(keys[0]["label"], *text);
        let resp = app.create_source(&json!({"name": "x", "code": text})).await;
        let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&body), ["code"]);

        // External ids and payloads, keys included, through a source found by its code.
        let mut payload = serde_json::Map::new();
        payload.insert("comment".to_owned(), json!(text));
        payload.insert((*text).to_owned(), json!([text, {"nested": text}]));
        let payload = Value::Object(payload);
        let body = json!({"external_lead_id": text, "source_code": code, "payload": payload});
        let contact = json(app.create_contact(&body).await, StatusCode::CREATED).await;
        assert_eq!(contact["payload"], payload);
        assert_eq!(contact["operator_id"], operator_id);
        let contact_id = contact["id"].as_i64().expect("an id");
        let read = json(app.get_contact(contact_id).await, StatusCode::OK).await;
        assert_eq!(read["payload"], payload);
        let lead = json(
            app.get_lead(read["lead_id"].as_i64().expect("a lead id"))
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(lead["external_id"], *text);

        // As a filter it matches exactly that lead and nothing else.
        let query = format!("?external_id={}", urlencode(text));
        let leads = json(app.list_leads(&query).await, StatusCode::OK).await;
        assert_eq!(leads.as_array().map(Vec::len), Some(1), "{text}: {leads}");
        assert_eq!(leads[0]["external_id"], *text);

        // Renamed to another such string, still verbatim.
        let renamed = format!("{text} /* again */");
        let resp = app
            .update_operator(operator_id, &json!({"name": renamed}))
            .await;
        assert_eq!(json(resp, StatusCode::OK).await["name"], renamed);
    }
    // Nothing was dropped or rewritten: every row is still there, and counted right.
    let n = SQL.len();
    let count = |v: &Value| v.as_array().map_or(0, Vec::len);
    assert_eq!(
        count(&json(app.list_operators("").await, StatusCode::OK).await),
        n
    );
    assert_eq!(
        count(&json(app.list_sources().await, StatusCode::OK).await),
        n
    );
    assert_eq!(
        count(&json(app.list_leads("").await, StatusCode::OK).await),
        n
    );
    assert_eq!(
        count(&json(app.list_contacts("").await, StatusCode::OK).await),
        n
    );
    let stats = json(app.operator_stats().await, StatusCode::OK).await;
    for row in stats.as_array().expect("a list") {
        assert_eq!(
            (&row["open_contacts"], &row["total_contacts"]),
            (&json!(1), &json!(1))
        );
    }
    let none = json(
        app.list_leads(&format!("?external_id={}", urlencode("' OR '1'='1")))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(none, json!([]));
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_json_body_declared_as_utf_8_is_read() {
    let app = spawn_app().await;
    for (i, content_type) in [
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=\"utf-8\"",
        "application/json",
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{"name": "Ann {i}"}}"#);
        let resp = app
            .send_raw(Method::POST, "/api/operators", Some(content_type), body)
            .await;
        json(resp, StatusCode::CREATED).await;
    }
}

/// A control character of each kind: NUL (which PostgreSQL cannot store in text), other
/// C0 controls (tab and line breaks among them) and DEL.
const CONTROLS: [char; 8] = [
    '\u{0}', '\u{1}', '\t', '\n', '\r', '\u{1b}', '\u{1f}', '\u{7f}',
];

/// A request with a JSON body and an optional `Idempotency-Key`.
async fn send_keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.address))
        .json(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.expect("request is answered")
}

async fn control_characters_in_identifiers_names_codes_and_labels_are_422_and_write_nothing(
    backend: Backend,
) {
    let (app, before) = seeded_on(backend).await;
    for c in CONTROLS {
        // Inside the text, where trimming a name cannot remove it.
        let text = format!("a{c}b");
        let cases: [(Method, &str, Value, Option<&str>, &str); 11] = [
            (
                Method::POST,
                "/api/contacts",
                json!({"external_lead_id": text, "source_code": "bot"}),
                None,
                "external_lead_id",
            ),
            (
                Method::POST,
                "/api/contacts",
                json!({"external_lead_id": text, "source_id": 1}),
                None,
                "external_lead_id",
            ),
            (
                Method::POST,
                "/api/contacts",
                json!({"external_lead_id": text, "source_code": "bot"}),
                Some("key-1"),
                "external_lead_id",
            ),
            (
                Method::POST,
                "/api/contacts",
                json!({"external_lead_id": "ok", "source_code": text}),
                None,
                "source_code",
            ),
            (
                Method::POST,
                "/api/operators",
                json!({"name": text}),
                None,
                "name",
            ),
            (
                Method::PATCH,
                "/api/operators/1",
                json!({"name": text}),
                None,
                "name",
            ),
            (
                Method::POST,
                "/api/sources",
                json!({"name": text, "code": "new"}),
                None,
                "name",
            ),
            (
                Method::POST,
                "/api/sources",
                json!({"name": "New", "code": text}),
                None,
                "code",
            ),
            (
                Method::PATCH,
                "/api/sources/1",
                json!({"name": text}),
                None,
                "name",
            ),
            (
                Method::PATCH,
                "/api/sources/1",
                json!({"code": text}),
                None,
                "code",
            ),
            (
                Method::POST,
                "/api/sources/1/keys",
                json!({"label": text}),
                None,
                "label",
            ),
        ];
        for (method, path, body, key, field) in cases {
            let resp = send_keyed(&app, method.clone(), path, &body, key).await;
            let problem =
                problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
            assert_eq!(fields(&problem), [field], "{method} {path} {body}");
        }
        // An external id with a control cannot exist, so asking for one is refused too.
        let query = format!("?external_id={}", urlencode(&text));
        let resp = app.list_leads(&query).await;
        let problem = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&problem), ["external_id"], "{query}");
    }
    // Around a name, whitespace controls are trimmed as they always were.
    let resp = app.create_operator(&json!({"name": "\tBo\r\n"})).await;
    let bo = json(resp, StatusCode::CREATED).await;
    assert_eq!(bo["name"], "Bo");
    let resp = app.delete_operator(common::id_of(bo)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(snapshot(&app).await, before);
    // The key that was refused was not spent: it still registers, once.
    let body = json!({"external_lead_id": "lead-2", "source_code": "bot"});
    let resp = send_keyed(&app, Method::POST, "/api/contacts", &body, Some("key-1")).await;
    json(resp, StatusCode::CREATED).await;
}

/// Payloads are any JSON: a control character in a string (or a key) is kept, as the
/// escape sequence in the stored JSON text, on both backends.
async fn control_characters_in_payloads_are_stored_and_read_back(backend: Backend) {
    let (app, _) = seeded_on(backend).await;
    let mut payload = serde_json::Map::new();
    payload.insert("text".to_owned(), json!("a\u{0}b\tc\u{1f}\u{7f}"));
    payload.insert("nul\u{0}key".to_owned(), json!(["\u{0}", {"\u{1}": "\n"}]));
    let payload = Value::Object(payload);
    for key in [None, Some("payload-key")] {
        let body =
            json!({"external_lead_id": "lead-nul", "source_code": "bot", "payload": payload});
        let resp = send_keyed(&app, Method::POST, "/api/contacts", &body, key).await;
        let created = json(resp, StatusCode::CREATED).await;
        assert_eq!(created["payload"], payload);
        let id = created["id"].as_i64().expect("an id");
        let read = json(app.get_contact(id).await, StatusCode::OK).await;
        assert_eq!(read["payload"], payload);
        let lead_id = read["lead_id"].as_i64().expect("a lead id");
        let lead = json(app.get_lead(lead_id).await, StatusCode::OK).await;
        let contacts = lead["contacts"].as_array().expect("the lead's contacts");
        assert!(contacts.iter().all(|c| c["payload"] == payload), "{lead}");
        if let Some(key) = key {
            // The stored answer replays with the payload intact.
            let resp = send_keyed(&app, Method::POST, "/api/contacts", &body, Some(key)).await;
            assert_eq!(
                resp.headers()
                    .get("idempotent-replayed")
                    .map(|v| v.as_bytes()),
                Some(&b"true"[..])
            );
            assert_eq!(json(resp, StatusCode::CREATED).await, created);
        }
    }
}
