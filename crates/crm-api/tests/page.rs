//! The supervisor's page in a real browser (headless Chromium through chromedriver): it
//! signs in, follows the event stream, and its controls change what they say. Every wait
//! has a ceiling (10 s) and asserts arrival, never a latency. Skipped, saying why, where
//! no browser is installed, unless `cargo xtask test` (or `CI=true`) requires one.

mod common;

use common::{TestApp, browser::Browser, id_of, json, spawn_app, spawn_app_secured};
use crm_store::testing::Backend;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-the-page-0123456789";

/// An app with the admin token set, whose test client sends it.
async fn secured() -> TestApp {
    let mut app = spawn_app_secured(Backend::Sqlite, ADMIN).await;
    let mut headers = header::HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {ADMIN}").parse().expect("a header value"),
    );
    app.client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client");
    app
}

/// Signs in on the page with `token`, and waits for the board and its stream.
async fn sign_in(browser: &Browser, app: &TestApp, token: &str) {
    browser.goto(&format!("{}/", app.address)).await;
    browser.wait_for("#signin:not([hidden])").await;
    // The one error a first visit shows, on purpose: the page asks without a credential
    // whether the API is open, and is answered 401 (docs/dashboard.md, "Signing in").
    let errors = browser.console_errors().await;
    assert!(
        errors.len() == 1 && errors[0].contains("/api/sources") && errors[0].contains("401"),
        "{errors:#?}"
    );
    browser.fill("#token", token).await;
    browser.click("#signin-form button[type=submit]").await;
    browser.wait_for("#board:not([hidden])").await;
    live(browser).await;
}

/// Opens the page of an app without an admin token (no sign-in), and waits for the stream.
async fn open(browser: &Browser, app: &TestApp) {
    browser.goto(&format!("{}/", app.address)).await;
    browser.wait_for("#board:not([hidden])").await;
    live(browser).await;
}

async fn live(browser: &Browser) {
    browser
        .wait_text("#live", |t| t == "Live", "the event stream to be followed")
        .await;
}

/// No console errors since the last look (the page also logs every error it shows).
async fn assert_no_console_errors(browser: &Browser) {
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Registers a contact through source `code` every 40 ms until aborted, so the board keeps
/// being rendered anew while a test works the page.
fn keep_registering(app: &TestApp, code: &str) -> tokio::task::JoinHandle<()> {
    let (address, client, code) = (app.address.clone(), app.client.clone(), code.to_owned());
    tokio::spawn(async move {
        for n in 0.. {
            let body = json!({"external_lead_id": format!("busy-{n}"), "source_code": code});
            let _ = client
                .post(format!("{address}/api/contacts"))
                .json(&body)
                .send()
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_in_an_assignment_through_the_api_shows_in_the_load_without_reload() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = secured().await;
    let anna = app.operator("Anna Petrova", 3).await;
    app.source("tg", &[(anna, 10)]).await;
    sign_in(&browser, &app, ADMIN).await;
    let load = format!("#op-{anna} .load");
    browser.wait_text(&load, |t| t == "0", "no load yet").await;
    assert_eq!(
        browser
            .wait_text("#role", |t| !t.is_empty(), "the role")
            .await,
        "Admin"
    );

    browser
        .js("window.notReloaded = true; return null", vec![])
        .await;
    app.contact("lead-1", "tg").await;
    browser
        .wait_text(&load, |t| t == "1", "the assignment in Anna's load")
        .await;
    assert_eq!(
        browser
            .js("return window.notReloaded === true", vec![])
            .await,
        json!(true),
        "the page was reloaded"
    );
    app.contact("lead-2", "tg").await;
    browser
        .wait_text(&load, |t| t == "2", "the second assignment")
        .await;
    // The credential stays in the tab across a reload, and nowhere in the URL.
    browser.client().refresh().await.expect("reloaded");
    browser.wait_for("#board:not([hidden])").await;
    assert!(
        !browser
            .client()
            .current_url()
            .await
            .expect("a URL")
            .as_str()
            .contains(ADMIN)
    );
    assert_no_console_errors(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_a_contact_from_the_page_frees_capacity_and_the_drained_contact_appears() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let anna = app.operator("Anna Petrova", 1).await;
    app.source("tg", &[(anna, 10)]).await;
    let first = id_of(app.contact("lead-1", "tg").await);
    let second = id_of(app.contact("lead-2", "tg").await);
    open(&browser, &app).await;
    browser.wait_for(&format!("#waiting-{second}")).await;
    browser.click(&format!("#op-{anna} details summary")).await;
    browser
        .click(&format!("#contact-row-{first} button.close"))
        .await;
    // The drain hands the waiting contact to Anna: it leaves the queue, joins her list.
    browser.wait_for(&format!("#contact-row-{second}")).await;
    browser.wait_gone(&format!("#waiting-{second}")).await;
    browser.wait_gone(&format!("#contact-row-{first}")).await;
    let closed = json(app.get_contact(first).await, StatusCode::OK).await;
    assert_eq!(closed["status"], "closed");
    let drained = json(app.get_contact(second).await, StatusCode::OK).await;
    assert_eq!(drained["operator_id"], anna);
    browser
        .wait_text(&format!("#op-{anna} .load"), |t| t == "1", "Anna's load")
        .await;
    browser
        .wait_text("#queue-total", |t| t == "empty", "the queue")
        .await;
    assert_no_console_errors(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drawer_tells_why_a_contact_went_where_it_went() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let anna = app.operator("Anna Petrova", 1).await;
    let boris = app.operator("Boris Ivanov", 5).await;
    app.source("tg", &[(anna, 30), (boris, 10)]).await;
    // Anna is full when the second contact comes: Boris takes it.
    app.source("web", &[(anna, 1)]).await;
    app.contact("lead-1", "web").await;
    let contact = app.contact("lead-2", "tg").await;
    assert_eq!(contact["operator_id"], boris);
    let id = id_of(contact);
    open(&browser, &app).await;
    browser.click(&format!("#op-{boris} details summary")).await;
    browser
        .click(&format!("#contact-row-{id} .contact-link"))
        .await;
    browser.wait_for("#drawer:not([hidden])").await;
    let line = browser
        .wait_text(".decision-line", |t| !t.is_empty(), "the decision")
        .await;
    let drawn = line
        .strip_prefix("2 candidates, 1 at capacity; drew ")
        .and_then(|rest| rest.strip_suffix(" of 10 → Boris Ivanov"))
        .and_then(|n| n.parse::<u64>().ok());
    // Counted from 1 for people (the record's draw is a point in 0..10).
    assert!(drawn.is_some_and(|n| (1..=10).contains(&n)), "{line}");
    let rows = browser.js(
        "return [...document.querySelectorAll('.candidates tbody tr')].map(r => r.innerText.replace(/\\s+/g, ' ').trim())",
        vec![],
    )
    .await;
    assert_eq!(
        rows,
        json!([
            "Anna Petrova 30 1 / 1 at capacity",
            "Boris Ivanov 10 0 / 5 chosen"
        ])
    );
    assert_eq!(
        browser
            .wait_text("#drawer-operator", |t| !t.is_empty(), "the operator")
            .await,
        "Boris Ivanov"
    );
    assert!(
        browser
            .wait_text(".payload", |_| true, "the payload")
            .await
            .contains("null"),
        "a contact registered without a payload shows null"
    );
    // A modal: the page behind is inert; Escape closes it and gives the focus back to the
    // link that opened it.
    assert_eq!(
        browser
            .js("return document.getElementById('board').inert", vec![])
            .await,
        json!(true)
    );
    browser
        .type_keys("\u{e00c}", std::time::Duration::ZERO)
        .await;
    browser.wait_for("#drawer[hidden]").await;
    assert_eq!(
        browser
            .js(
                "return [document.getElementById('board').inert, document.activeElement.dataset.key]",
                vec![],
            )
            .await,
        json!([false, format!("link-{id}")])
    );
    assert_no_console_errors(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_weights_editor_previews_the_change_then_applies_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let anna = app.operator("Anna Petrova", 1).await;
    let boris = app.operator("Boris Ivanov", 5).await;
    let source = app.source("tg", &[(anna, 10)]).await;
    app.contact("lead-1", "tg").await;
    let waiting = [
        id_of(app.contact("lead-2", "tg").await),
        id_of(app.contact("lead-3", "tg").await),
    ];
    open(&browser, &app).await;
    // Boris has no weight on the source: he is added from the list, then given one.
    browser
        .select(&format!("#add-{source}"), &boris.to_string())
        .await;
    browser
        .fill(&format!("#weight-{source}-{boris}"), "30")
        .await;
    browser.click(&format!("#preview-{source}")).await;
    let preview = browser
        .wait_text(
            &format!("#preview-result-{source}"),
            |t| !t.is_empty(),
            "the dry run",
        )
        .await;
    assert!(
        preview.contains("would assign 2 waiting contacts now"),
        "{preview}"
    );
    let bars = browser
        .js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.replace(/\\s+/g, ' ').trim())",
            vec![json!(format!("#source-{source} td.compare"))],
        )
        .await;
    assert_eq!(
        bars,
        json!([
            "now 100 % after 0 % now at capacity",
            "now 0 % after 100 % takes 2 waiting"
        ]),
        "the dry run's shares, last day against predicted, per operator"
    );
    // Nothing changed yet: the dry run writes nothing.
    let before = json(app.get_source(source).await, StatusCode::OK).await;
    assert_eq!(before["operators"].as_array().map(Vec::len), Some(1));

    browser.click(&format!("#apply-{source}")).await;
    for id in waiting {
        browser.wait_gone(&format!("#waiting-{id}")).await;
    }
    let after = json(app.get_source(source).await, StatusCode::OK).await;
    let weights: Vec<(i64, i64)> = after["operators"]
        .as_array()
        .expect("weights")
        .iter()
        .map(|w| {
            (
                w["operator_id"].as_i64().unwrap_or(0),
                w["weight"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(weights, vec![(anna, 10), (boris, 30)]);
    for id in waiting {
        let contact = json(app.get_contact(id).await, StatusCode::OK).await;
        assert_eq!(
            contact["operator_id"], boris,
            "contact {id} drained to Boris"
        );
    }
    browser
        .wait_gone(&format!("#preview-result-{source}"))
        .await;
    let inputs = browser
        .js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.value)",
            vec![json!(format!("#source-{source} input.weight"))],
        )
        .await;
    assert_eq!(inputs, json!(["10", "30"]));
    assert_no_console_errors(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_sees_the_board_but_every_write_is_disabled_and_refused() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = secured().await;
    let anna = app.operator("Anna Petrova", 3).await;
    let source = app.source("tg", &[(anna, 10)]).await;
    let contact = id_of(app.contact("lead-1", "tg").await);
    json(
        app.update_operator(anna, &json!({"max_active_contacts": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    let waiting = id_of(app.contact("lead-2", "tg").await);
    let key = json(
        app.send(
            reqwest::Method::POST,
            "/api/keys",
            Some(&json!({"scope": "viewer", "label": "wall screen"})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let secret = key["key"].as_str().expect("the key's secret").to_owned();
    sign_in(&browser, &app, &secret).await;
    assert_eq!(
        browser
            .wait_text("#role", |t| !t.is_empty(), "the role")
            .await,
        "Viewer · read only"
    );
    browser.click(&format!("#op-{anna} details summary")).await;
    browser.wait_for(&format!("#contact-row-{contact}")).await;
    for control in [
        format!("#active-{anna}"),
        format!("#limit-{anna}"),
        format!("#contact-row-{contact} button.close"),
        format!("#contact-row-{contact} button.unassign"),
        format!("#strategy-{source}"),
        format!("#sticky-{source}"),
        format!("#apply-{source}"),
        format!("#assign-to-{waiting}"),
        format!("#waiting-{waiting} button.assign"),
    ] {
        let enabled = browser
            .wait_for(&control)
            .await
            .is_enabled()
            .await
            .expect("asked");
        assert!(!enabled, "{control} is enabled for a viewer");
    }
    // The dry run writes nothing: a viewer may use it.
    browser
        .fill(&format!("#weight-{source}-{anna}"), "20")
        .await;
    browser.click(&format!("#preview-{source}")).await;
    browser.wait_for(&format!("#preview-result-{source}")).await;
    assert_no_console_errors(&browser).await;
    // A request forged in the page with the viewer's key is refused by the server.
    let status = browser
        .js_async(
            "const done = arguments[arguments.length - 1];
             const token = sessionStorage.getItem('mini-crm.token');
             fetch('/api/operators/' + arguments[0], {method: 'PATCH',
               headers: {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'},
               body: JSON.stringify({is_active: false})}).then(r => done(r.status), e => done(String(e)));",
            vec![json!(anna)],
        )
        .await;
    assert_eq!(status, json!(403));
    let unchanged = json(app.get_operator(anna).await, StatusCode::OK).await;
    assert_eq!(unchanged["is_active"], true);
    browser.close().await;
}

/// Screenshots of the main views at a laptop's and a phone's width, for people to look
/// at (one of each is in docs/img/ and README): the board, and the contact drawer.
#[tokio::test(flavor = "multi_thread")]
async fn screenshots_of_the_main_views() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let names = [
        ("Anna Petrova", 4),
        ("Boris Ivanov", 3),
        ("Chen Wei", 2),
        ("Daria Kowalska", 2),
    ];
    let mut ops = Vec::new();
    for (name, limit) in names {
        ops.push(app.operator(name, limit).await);
    }
    for (name, code, weights) in [
        (
            "Telegram bot",
            "tg",
            [(ops[0], 40), (ops[1], 30), (ops[2], 20)],
        ),
        (
            "Website chat",
            "web",
            [(ops[1], 50), (ops[3], 20), (ops[0], 10)],
        ),
    ] {
        let body = json!({"name": name, "code": code});
        let source = id_of(json(app.create_source(&body).await, StatusCode::CREATED).await);
        let weights: Vec<Value> = weights
            .iter()
            .map(|(operator_id, weight)| json!({"operator_id": operator_id, "weight": weight}))
            .collect();
        let body = json!({ "operators": weights });
        json(app.put_weights(source, &body).await, StatusCode::OK).await;
    }
    let texts = [
        "Hi! Is the annual plan still discounted?",
        "My order #104512 has not arrived yet",
        "Can I change the delivery address?",
        "How do I reset my password?",
        "Do you ship to Kazakhstan?",
        "I was charged twice for order #381145",
        "Can someone call me back today?",
    ];
    let mut contacts = Vec::new();
    for n in 0..14 {
        let body = json!({
            "external_lead_id": format!("+4915{:09}", 7_340_000 + n % 9),
            "source_code": if n % 3 == 0 { "web" } else { "tg" },
            "payload": {"text": texts[n % texts.len()], "message_id": 5000 + n},
        });
        contacts.push(json(app.create_contact(&body).await, StatusCode::CREATED).await);
    }
    json(
        app.update_operator(ops[3], &json!({"is_active": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    open(&browser, &app).await;
    browser.wait_for(&format!("#op-{}", ops[3])).await;
    browser.screenshot("board", 1280, 800).await;
    browser.screenshot("board", 390, 844).await;
    // At a phone's width a long name wraps: nothing pushes the page sideways.
    let long = app
        .operator(
            "Maximiliana-Konstantinopolitanska Wolkenkratzerbauerin-Oberhausen",
            3,
        )
        .await;
    browser.wait_for(&format!("#op-{long}")).await;
    let widths = browser
        .js(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await;
    assert_eq!(widths[0], widths[1], "the page scrolls sideways at 390 px");
    browser
        .client()
        .set_window_size(1280, 800)
        .await
        .expect("resized");
    // A contact that was drawn for, with an operator at capacity among its candidates.
    let drawn = contacts
        .iter()
        .rev()
        .find(|c| c["operator_id"] == ops[1])
        .expect("Boris took one");
    let id = id_of(drawn.clone());
    browser
        .click(&format!("#op-{} details summary", ops[1]))
        .await;
    browser
        .click(&format!("#contact-row-{id} .contact-link"))
        .await;
    browser.wait_for(".decision-line").await;
    browser.screenshot("drawer", 1280, 800).await;
    browser.screenshot("drawer", 390, 844).await;
    assert_no_console_errors(&browser).await;
    browser.close().await;
}

/// A proxy between the browser and the app that can cut the connections carrying an
/// event stream (as a network drop would) and can make the next stream ask for a
/// position the database never had. It notes the `Last-Event-ID` of each request.
struct StreamCutter {
    address: String,
    state: std::sync::Arc<std::sync::Mutex<CutterState>>,
}

#[derive(Default)]
struct CutterState {
    /// The connections that carried `GET /api/events`, to cut.
    streams: Vec<tokio::task::AbortHandle>,
    /// Every `Last-Event-ID` sent, in order.
    last_event_ids: Vec<String>,
    /// Rewrite the next `Last-Event-ID` to this.
    rewrite: Option<String>,
}

impl StreamCutter {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = format!("http://{}", listener.local_addr().expect("an address"));
        let state = std::sync::Arc::new(std::sync::Mutex::new(CutterState::default()));
        let shared = std::sync::Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let state = std::sync::Arc::clone(&shared);
                let (tx, rx) = tokio::sync::oneshot::channel::<tokio::task::AbortHandle>();
                let task = tokio::spawn(async move {
                    let Ok(handle) = rx.await else { return };
                    let server = tokio::net::TcpStream::connect(upstream)
                        .await
                        .expect("the app accepts");
                    relay(client, server, state, handle).await;
                });
                let _ = tx.send(task.abort_handle());
            }
        });
        Self { address, state }
    }

    /// Cuts every connection that carried an event stream.
    fn cut(&self) {
        for stream in self.state.lock().expect("a lock").streams.drain(..) {
            stream.abort();
        }
    }

    fn last_event_ids(&self) -> Vec<String> {
        self.state.lock().expect("a lock").last_event_ids.clone()
    }

    fn rewrite_next_last_event_id(&self, to: &str) {
        self.state.lock().expect("a lock").rewrite = Some(to.to_owned());
    }
}

/// Copies both ways; a request head from the browser is read for its path and
/// `Last-Event-ID` (and that header rewritten when asked) on the way.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    state: std::sync::Arc<std::sync::Mutex<CutterState>>,
    me: tokio::task::AbortHandle,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
        if chunk.starts_with("GET /api/events") {
            let mut state = state.lock().expect("a lock");
            state.streams.push(me.clone());
            if let Some(line) = chunk
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("last-event-id:"))
                .map(str::to_owned)
            {
                let value = line["last-event-id:".len()..].trim().to_owned();
                state.last_event_ids.push(value);
                if let Some(to) = state.rewrite.take() {
                    chunk = chunk.replace(&line, &format!("Last-Event-ID: {to}"));
                }
            }
        }
        if server_write.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    down.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_dropped_stream_the_page_resumes_from_its_last_event_and_reloads_on_reset() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let cutter = StreamCutter::start(&app.address).await;
    let anna = app.operator("Anna Petrova", 5).await;
    app.source("tg", &[(anna, 10)]).await;
    browser.goto(&format!("{}/", cutter.address)).await;
    browser.wait_for("#board:not([hidden])").await;
    live(&browser).await;
    let load = format!("#op-{anna} .load");
    app.contact("lead-1", "tg").await;
    browser
        .wait_text(&load, |t| t == "1", "the first assignment")
        .await;

    // The stream drops; a contact comes while the page is away. Only resuming after the
    // last event it saw brings that contact's event, and so the new load, to the page.
    cutter.cut();
    app.contact("lead-2", "tg").await;
    browser
        .wait_text(&load, |t| t == "2", "the assignment made while cut off")
        .await;
    let resumed = cutter.last_event_ids();
    let seen: u64 = resumed
        .first()
        .unwrap_or_else(|| panic!("the page reconnected without Last-Event-ID"))
        .parse()
        .expect("a sequence number");
    assert!(
        seen >= 4,
        "resumed after event {seen}: three writes and a contact came first"
    );

    // Dropped again, and this time its position is one the database never had: the
    // server answers `reset`, and the page reads everything again.
    cutter.rewrite_next_last_event_id("999999999");
    cutter.cut();
    app.contact("lead-3", "tg").await;
    browser
        .wait_text(&load, |t| t == "3", "the state read again after the reset")
        .await;
    assert_eq!(
        cutter.last_event_ids().len(),
        2,
        "{:?}",
        cutter.last_event_ids()
    );
    live(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_typed_while_events_flow_is_saved_as_typed_once() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let anna = app.operator("Anna Petrova", 50).await;
    app.source("tg", &[(anna, 10)]).await;
    open(&browser, &app).await;
    let field = format!("#limit-{anna}");
    browser.wait_for(&field).await;
    // The field is focused first (a WebDriver click needs the element to stay put), then
    // stays focused as the board is rendered around it.
    browser.click(&field).await;
    // Contacts keep coming while the supervisor types, so the board is rendered anew
    // between keystrokes.
    let busy = keep_registering(&app, "tg");
    let before = crm_store::testing::events_after(app.store.as_ref(), 0, 500)
        .await
        .len();
    // Select what is there, then type over it: 1, 2, 0 and Enter, a keystroke every 150 ms.
    browser.select_all().await;
    browser
        .type_keys("120\u{e007}", std::time::Duration::from_millis(150))
        .await;
    browser
        .wait_text("#toast", |t| t == "Limit saved", "the limit saved")
        .await;
    busy.abort();
    let saved = json(app.get_operator(anna).await, StatusCode::OK).await;
    assert_eq!(saved["max_active_contacts"], 120);
    // One change, with the whole number: nothing half-typed was sent on the way.
    let updates: Vec<Value> = crm_store::testing::events_after(app.store.as_ref(), 0, 500)
        .await
        .into_iter()
        .skip(before)
        .filter(|e| e.kind.as_str() == "operator.updated")
        .map(|e| serde_json::from_str(&e.envelope()).expect("JSON"))
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0]["data"]["max_active_contacts"], 120);
    assert_no_console_errors(&browser).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_contact_is_assigned_by_hand_while_contacts_flow() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let anna = app.operator("Anna Petrova", 1).await;
    let boris = app.operator("Boris Ivanov", 5).await;
    let chen = app.operator("Chen Wei", 100_000).await;
    app.source("tg", &[(anna, 10)]).await;
    app.source("web", &[(chen, 10)]).await;
    app.contact("lead-1", "tg").await;
    // Anna is full and nobody else takes tg: this one waits, for a person to decide.
    let waiting = id_of(app.contact("lead-2", "tg").await);
    open(&browser, &app).await;
    browser.wait_for(&format!("#waiting-{waiting}")).await;
    let busy = keep_registering(&app, "web");
    browser
        .select(&format!("#assign-to-{waiting}"), &boris.to_string())
        .await;
    browser
        .click(&format!("#waiting-{waiting} button.assign"))
        .await;
    browser.wait_gone(&format!("#waiting-{waiting}")).await;
    busy.abort();
    let assigned = json(app.get_contact(waiting).await, StatusCode::OK).await;
    assert_eq!(assigned["operator_id"], boris);
    let history = json(
        app.get(&format!("/api/contacts/{waiting}/decisions")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        history
            .as_array()
            .and_then(|h| h.last())
            .map(|e| e["path"].clone()),
        Some(json!("manual"))
    );
    assert_no_console_errors(&browser).await;
    browser.close().await;
}
