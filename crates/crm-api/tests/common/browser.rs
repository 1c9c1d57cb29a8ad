//! A real headless Chromium for the page's tests, driven over WebDriver by fantoccini, so the
//! page is tested as a supervisor uses it: its modules run, its requests reach the app, and
//! what it shows is read back from the DOM.
//!
//! Each [`Browser`] runs its own chromedriver on a free port, because test binaries run their
//! tests in parallel and one driver process per test keeps their sessions apart. Without
//! Chromium or chromedriver the tests skip with a line saying why, unless the run asks for a
//! browser (`CRM_TEST_REQUIRE_BROWSER=1`, set by `cargo xtask test`, or `CI=true`): there a
//! missing browser fails instead of passing quietly. `CRM_TEST_SKIP_BROWSER=1`
//! (`cargo xtask test --no-browser`) skips them even where a browser is installed.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, wd::Capabilities};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long any wait may take before the test fails: a ceiling for a slow machine, never a
/// latency the page is held to.
const PATIENCE: Duration = Duration::from_secs(10);

/// How many browsers a test binary runs at once: each is a handful of processes, and CI
/// has two cores.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// A headless Chromium session and the chromedriver serving it; dropping it stops both.
pub struct Browser {
    client: Client,
    /// A place among the browsers that may run at once (see [`SLOTS`]).
    _slot: tokio::sync::SemaphorePermit<'static>,
    driver: Child,
    /// chromedriver's port, for its shutdown command on drop.
    port: u16,
}

impl Browser {
    /// Starts chromedriver and a Chromium session, or returns `None` (after saying why) when
    /// either program is missing and the run does not require a browser.
    pub async fn start() -> Option<Browser> {
        if is_set("CRM_TEST_SKIP_BROWSER", &["1", "true"]) {
            eprintln!("browser tests skipped: CRM_TEST_SKIP_BROWSER is set (`--no-browser`)");
            return None;
        }
        let programs = find("CRM_TEST_CHROMEDRIVER", "chromedriver")
            .and_then(|driver| Ok((driver, find("CRM_TEST_CHROMIUM", "chromium")?)));
        let (driver_path, chromium) = match programs {
            Ok(programs) => programs,
            Err(why) if browser_required() => panic!(
                "browser tests need a browser (CRM_TEST_REQUIRE_BROWSER or CI is set): {why}; \
                 install chromium and chromium-driver (Debian) or run `cargo xtask test`"
            ),
            Err(why) => {
                eprintln!(
                    "browser tests skipped: {why}; install chromium and chromium-driver \
                     (Debian) or run `cargo xtask test`"
                );
                return None;
            }
        };
        let slot = SLOTS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        // Starting a browser on a loaded two-core machine now and then fails outright (the
        // driver closes the first connection, or loses its port to another process between
        // `free_port` and its bind): such a start is tried again, from a new driver.
        let mut failures = Vec::new();
        for _ in 0..STARTS {
            match launch(&driver_path, &chromium).await {
                Ok((client, driver, port)) => {
                    return Some(Browser {
                        client,
                        _slot: slot,
                        driver,
                        port,
                    });
                }
                Err(why) => {
                    eprintln!("a browser did not start: {why}");
                    failures.push(why);
                }
            }
        }
        panic!(
            "chromedriver cannot start {} ({STARTS} tries): {}",
            chromium.display(),
            failures.join("; ")
        );
    }

    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The first element matching the CSS selector `css`, once there is one.
    pub async fn wait_for(&self, css: &str) -> Element {
        match poll(async || self.first(css).await).await {
            Some(element) => element,
            None => panic!(
                "no element matches `{css}` after {PATIENCE:?} on {}",
                self.url().await
            ),
        }
    }

    /// Waits until `check` answers true; on timeout, fails naming `what`.
    pub async fn wait_until(&self, what: &str, check: impl AsyncFn(&Client) -> bool) {
        let done = poll(async || check(&self.client).await.then_some(())).await;
        assert!(
            done.is_some(),
            "still not {what} after {PATIENCE:?} on {}",
            self.url().await
        );
    }

    /// The text of the first element matching `css`, once there is one and `wanted` accepts
    /// its text. On timeout, fails naming `what` and the last text seen.
    pub async fn wait_text(&self, css: &str, wanted: impl Fn(&str) -> bool, what: &str) -> String {
        let mut last = None;
        let found = poll(async || {
            let text = self.first(css).await?.text().await.ok()?;
            let accepted = wanted(&text);
            last = Some(text);
            if accepted { last.clone() } else { None }
        })
        .await;
        match found {
            Some(text) => text,
            None => panic!(
                "`{css}` never showed {what} in {PATIENCE:?}; last text seen: {last:?} on {}",
                self.url().await
            ),
        }
    }

    /// Waits until no element matches `css`.
    pub async fn wait_gone(&self, css: &str) {
        let gone = poll(async || {
            let all = self.client.find_all(Locator::Css(css)).await.ok()?;
            all.is_empty().then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "`{css}` still matches after {PATIENCE:?} on {}",
            self.url().await
        );
    }

    /// Clicks the first element matching `css`, once there is one.
    pub async fn click(&self, css: &str) {
        self.on_fresh(css, "click", async |e| e.click().await).await;
    }

    /// Replaces the value of the first field matching `css` with `text`, typed as keys.
    pub async fn fill(&self, css: &str, text: &str) {
        self.on_fresh(css, "type into", async |e| {
            e.clear().await?;
            e.send_keys(text).await
        })
        .await;
    }

    /// Types `keys` into whatever has the focus, as a keyboard does, pausing `gap` between
    /// keys: unlike typing into an element, it goes on into a field the page rendered anew
    /// and focused again.
    pub async fn type_keys(&self, keys: &str, gap: Duration) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key })
                .pause(gap);
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("cannot type {keys:?}: {e}"));
    }

    /// Selects all of the focused field's text (Ctrl+A), to type over it.
    pub async fn select_all(&self) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        const CONTROL: char = '\u{e009}';
        let actions = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: CONTROL })
            .then(KeyAction::Down { value: 'a' })
            .then(KeyAction::Up { value: 'a' })
            .then(KeyAction::Up { value: CONTROL });
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("cannot select all: {e}"));
    }

    /// Chooses the option with `value` in the first `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.on_fresh(css, "choose in", async |e| e.select_by_value(value).await)
            .await;
    }

    /// Does `act` on the first element matching `css`, finding it again when the page
    /// replaced it meanwhile (a live refresh renders its sections anew).
    async fn on_fresh(
        &self,
        css: &str,
        what: &str,
        act: impl AsyncFn(Element) -> Result<(), fantoccini::error::CmdError>,
    ) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let element = self.wait_for(css).await;
            match act(element).await {
                Ok(()) => return,
                Err(e) if is_stale(&e) && Instant::now() < deadline => {}
                Err(e) => panic!("cannot {what} `{css}`: {e}"),
            }
        }
    }

    /// Runs `script` as a function body with `args` as `arguments`, and returns what it returns.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script`, which ends by calling `arguments[arguments.length - 1]` with its result.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The console's errors (level SEVERE: `console.error`, uncaught exceptions, failed
    /// loads) since the previous call, so a test can assert the page logged none.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("cannot read the browser's console log: {e}"));
        let Value::Array(entries) = entries else {
            panic!("the console log is not a list: {entries}");
        };
        entries
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A PNG of the viewport at exactly `width`×`height` CSS pixels, written to
    /// `$CRM_SCREENSHOT_DIR` (or a temporary folder) as `{name}-{width}x{height}.png` for a
    /// person to look at.
    pub async fn screenshot(&self, name: &str, width: u32, height: u32) -> PathBuf {
        self.set_viewport(width, height).await;
        // Lets a layout that depends on the width settle (media queries, wrapping).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("cannot take a screenshot: {e}"));
        let dir = std::env::var_os("CRM_SCREENSHOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("crm-page-screenshots"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}-{width}x{height}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Ends the session, which closes Chromium, then stops chromedriver. Dropping the value
    /// does the same less politely (a test that fails never gets to call this).
    pub async fn close(self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the browser session failed: {e}");
        }
    }

    /// Sizes the window so that the viewport, not the window, is `width`×`height`. Even
    /// `--headless=new` keeps a frame: a 1280×800 window shows a 1280×661 viewport in
    /// Chromium 148 and 1280×657 in 156, so the frame is measured, not assumed.
    async fn set_viewport(&self, width: u32, height: u32) {
        let resize = async |w: u32, h: u32| {
            self.client
                .set_window_size(w, h)
                .await
                .unwrap_or_else(|e| panic!("cannot size the window to {w}x{h}: {e}"));
        };
        resize(width, height).await;
        let inner = self
            .js("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        let (inner_width, inner_height): (u32, u32) = serde_json::from_value(inner.clone())
            .unwrap_or_else(|e| panic!("the viewport's size is not two numbers: {inner}: {e}"));
        let frame_width = width.saturating_sub(inner_width);
        let frame_height = height.saturating_sub(inner_height);
        if frame_width > 0 || frame_height > 0 {
            resize(width + frame_width, height + frame_height).await;
        }
    }

    /// The first element matching `css`, if any now.
    async fn first(&self, css: &str) -> Option<Element> {
        let all = self.client.find_all(Locator::Css(css)).await.ok()?;
        all.into_iter().next()
    }

    /// The page's address, for failure messages.
    async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown page: {e})"),
        }
    }
}

impl Drop for Browser {
    /// Killing chromedriver alone would leave its Chromium running, adopted by init, one per
    /// failed test; its `/shutdown` command quits the browser first, then the driver exits.
    fn drop(&mut self) {
        let asked = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut stream| {
            stream.set_read_timeout(Some(PATIENCE))?;
            stream.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )?;
            stream.read_to_end(&mut Vec::new())
        });
        let deadline = Instant::now() + PATIENCE;
        while asked.is_ok() && Instant::now() < deadline {
            match self.driver.try_wait() {
                Ok(None) => std::thread::sleep(POLL),
                _ => break,
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's log command (`POST /session/{id}/se/log`), which it still answers for W3C
/// sessions; fantoccini has no command for it, and WebDriver BiDi would mean a second client.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/se/log"))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// Runs `step` every [`POLL`] until it returns something or [`PATIENCE`] runs out.
async fn poll<T>(mut step: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = step().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Chromium's options: headless, at a fixed window size so that runs lay the page out alike,
/// fit for a container (no sandbox, no GPU, no small `/dev/shm`), and keeping the console
/// for [`Browser::console_errors`].
fn capabilities(chromium: &Path) -> Capabilities {
    let mut capabilities = Capabilities::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
                "--hide-scrollbars",
            ],
        }),
    );
    capabilities.insert("goog:loggingPrefs".to_owned(), json!({"browser": "ALL"}));
    capabilities
}

/// The program named by the variable `env`, else `name` on `PATH` or in `/usr/bin`.
fn find(env: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env}={} is not a file", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("no `{name}` on PATH or in /usr/bin (nor {env} set)"))
}

/// Whether a missing browser fails the test rather than skipping it.
fn browser_required() -> bool {
    is_set("CRM_TEST_REQUIRE_BROWSER", &["1", "true"]) || is_set("CI", &["true"])
}

/// Whether the variable `name` holds one of `values`.
fn is_set(name: &str, values: &[&str]) -> bool {
    std::env::var(name).is_ok_and(|value| values.contains(&value.as_str()))
}

/// A port nothing listens on now. Another process could take it before chromedriver does;
/// chromedriver then fails to start and [`wait_for_driver`] says so.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("a TCP address").port()
}

/// How many times a browser's start is tried before its test fails.
const STARTS: usize = 3;

/// Starts chromedriver on a free port and a Chromium session through it.
async fn launch(driver_path: &Path, chromium: &Path) -> Result<(Client, Child, u16), String> {
    let port = free_port();
    let mut driver = Command::new(driver_path)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", driver_path.display()))?;
    let client = match wait_for_driver(&mut driver, driver_path, port).await {
        Ok(()) => ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(chromium))
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| e.to_string()),
        Err(why) => Err(why),
    };
    match client {
        Ok(client) => Ok((client, driver, port)),
        // No `Browser` whose Drop would stop the driver.
        Err(why) => {
            let _ = driver.kill();
            let _ = driver.wait();
            Err(why)
        }
    }
}

/// Waits until chromedriver accepts connections on `port`; an error if it exits first or
/// does not listen within [`PATIENCE`].
async fn wait_for_driver(driver: &mut Child, path: &Path, port: u16) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut exited = None;
    let ready = poll(async || {
        if let Ok(Some(status)) = driver.try_wait() {
            exited = Some(status);
            return Some(());
        }
        tokio::net::TcpStream::connect(address).await.ok().map(drop)
    })
    .await;
    match (exited, ready) {
        (Some(status), _) => Err(format!("{} --port={port} exited: {status}", path.display())),
        (None, Some(())) => Ok(()),
        (None, None) => Err(format!(
            "{} did not listen on port {port} in {PATIENCE:?}",
            path.display()
        )),
    }
}

/// Whether `err` says the element is gone from the page (it was rendered anew).
fn is_stale(err: &fantoccini::error::CmdError) -> bool {
    matches!(
        err,
        fantoccini::error::CmdError::Standard(e)
            if e.error == fantoccini::error::ErrorStatus::StaleElementReference
    )
}
