//! PostgreSQL outages: a `crm-api` process whose database goes away and comes back.
//!
//! The shared test server cannot be stopped (other tests use it), so the server reaches
//! its database through a small TCP proxy in this test. Cutting the proxy does what a
//! stopped PostgreSQL does to a client: every open connection is closed under the pool's
//! feet and new connections are refused (the listening port is closed). Restoring it
//! listens on the same port again. Unlike `ALTER DATABASE … ALLOW_CONNECTIONS false`
//! plus `pg_terminate_backend`, this also covers the network path (refused TCP
//! connections, sockets closed mid-statement), not only the server's own refusals.
//!
//! Asserted: during the outage every request answers fast (well under 7 s with
//! `CRM_DB_ACQUIRE_TIMEOUT_MS=1000`) with 503 problem+json `unavailable`, `/health` is
//! 503, the process stays alive, and once the database is back requests succeed again
//! without a restart, with every counter equal to its rows.
//!
//! Built only with the `postgres-tests` feature (`cargo xtask test` turns it on).
#![cfg(feature = "postgres-tests")]

mod process;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crm_store::testing::{Backend, TestDatabase};
use process::{Answer, ServerProcess, assert_counters_match_rows, request};
use serde_json::json;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinSet,
};

/// The longest any request may take while the database is away.
const FAIL_FAST: Duration = Duration::from_secs(7);

// ---------------------------------------------------------------------------------------
// The proxy.
// ---------------------------------------------------------------------------------------

enum Control {
    Cut(oneshot::Sender<()>),
    Restore(oneshot::Sender<()>),
}

/// A TCP proxy on a fixed local port in front of PostgreSQL.
struct Proxy {
    port: u16,
    control: mpsc::Sender<Control>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        // Bound here, on a port the system picks: a port chosen free and bound later could
        // be taken in between by a server another test starts.
        let listener = listen(0);
        let port = listener.local_addr().expect("the proxy's address").port();
        let (control, commands) = mpsc::channel(4);
        tokio::spawn(run_proxy(listener, upstream, commands));
        Self { port, control }
    }

    /// The database goes away: open connections are closed, new ones refused.
    async fn cut(&self) {
        let (done, wait) = oneshot::channel();
        self.control
            .send(Control::Cut(done))
            .await
            .expect("proxy runs");
        wait.await.expect("proxy cut");
    }

    /// The database is back on the same address.
    async fn restore(&self) {
        let (done, wait) = oneshot::channel();
        self.control
            .send(Control::Restore(done))
            .await
            .expect("proxy runs");
        wait.await.expect("proxy restored");
    }
}

fn listen(port: u16) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().expect("a socket");
    // The cut leaves the proxy's side of closed connections in TIME_WAIT on this port.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("bind the proxy port");
    socket.listen(128).expect("listen")
}

async fn run_proxy(
    first: tokio::net::TcpListener,
    upstream: SocketAddr,
    mut commands: mpsc::Receiver<Control>,
) {
    let port = first.local_addr().expect("the proxy's address").port();
    let mut first = Some(first);
    let mut restored: Option<oneshot::Sender<()>> = None;
    loop {
        // Up: accept and pipe until told to cut; after a cut, on the same port again.
        let listener = first.take().unwrap_or_else(|| listen(port));
        if let Some(restored) = restored.take() {
            let _ = restored.send(());
        }
        let mut pipes = JoinSet::new();
        let cut = loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((mut client, _)) = accepted {
                        pipes.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                }
                Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
                command = commands.recv() => match command {
                    Some(Control::Cut(done)) => break done,
                    Some(Control::Restore(done)) => { let _ = done.send(()); }
                    None => return,
                },
            }
        };
        // Down: the port is closed (connections refused) and every piped connection is
        // dropped, which closes both of its sockets.
        drop(listener);
        pipes.shutdown().await;
        let _ = cut.send(());
        loop {
            match commands.recv().await {
                Some(Control::Restore(done)) => {
                    restored = Some(done);
                    break;
                }
                Some(Control::Cut(done)) => {
                    let _ = done.send(());
                }
                None => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------------------

/// The log lines that explain a 500: what the server logged as a store failure.
fn failures(server: &ServerProcess) -> String {
    let logs = server.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("store failed") || l.contains("panicked"))
        .take(5)
        .collect();
    lines.join("\n")
}

/// `host:port` of a `postgres://user@host:port/db` URL, and the URL with another address.
fn split_url(url: &str) -> (SocketAddr, impl Fn(u16) -> String + use<>) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').expect("a database name");
    let (user, host_port) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, h)| (u, h));
    let addr: SocketAddr = host_port
        .parse()
        .unwrap_or_else(|_| panic!("{host_port} is an IP address and port"));
    let (scheme, user, path) = (scheme.to_owned(), user.to_owned(), path.to_owned());
    let at = if user.is_empty() { "" } else { "@" };
    (addr, move |port| {
        format!("{scheme}://{user}{at}127.0.0.1:{port}/{path}")
    })
}

async fn start_server(database_url: &str, client: &reqwest::Client) -> ServerProcess {
    let env = [
        ("CRM_DB_MAX_CONNECTIONS", "4"),
        ("CRM_DB_ACQUIRE_TIMEOUT_MS", "1000"),
        ("CRM_DB_STATEMENT_TIMEOUT_MS", "2000"),
    ];
    ServerProcess::start_in_own_dir(database_url, &env, client).await
}

// ---------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------

/// One answer: status, content type, body, and how long it took.
/// The outage's expectation of an answer.
trait AssertUnavailable {
    fn assert_unavailable(&self, what: &str);
}

impl AssertUnavailable for Answer {
    fn assert_unavailable(&self, what: &str) {
        assert_eq!(self.status, 503, "{what}: {self:?}");
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "{what}: {self:?}"
        );
        assert_eq!(self.body["code"], "unavailable", "{what}: {self:?}");
        assert_eq!(self.body["status"], 503, "{what}: {self:?}");
        assert!(self.took < FAIL_FAST, "{what} took {:?}", self.took);
    }
}

/// What the fixture created.
struct Fixture {
    source_id: i64,
    contact_id: i64,
}

async fn fixture(client: &reqwest::Client, base: &str) -> Fixture {
    let mut weights = Vec::new();
    for (name, limit) in [("Anna", 3), ("Boris", 2)] {
        let op = request(
            client
                .post(format!("{base}/api/operators"))
                .json(&json!({"name": name, "max_active_contacts": limit})),
        )
        .await;
        assert_eq!(op.status, 201, "{op:?}");
        weights.push(json!({"operator_id": op.body["id"], "weight": 1}));
    }
    let source = request(
        client
            .post(format!("{base}/api/sources"))
            .json(&json!({"name": "Bot", "code": "bot"})),
    )
    .await;
    assert_eq!(source.status, 201, "{source:?}");
    let source_id = source.body["id"].as_i64().expect("source id");
    let put = request(
        client
            .put(format!("{base}/api/sources/{source_id}/operators"))
            .json(&json!({ "operators": weights })),
    )
    .await;
    assert_eq!(put.status, 200, "{put:?}");
    // Several at once, so the pool holds more than one connection when it is cut.
    let mut registrations = JoinSet::new();
    for i in 0..8 {
        let req = client
            .post(format!("{base}/api/contacts"))
            .json(&json!({"external_lead_id": format!("before-{i}"), "source_id": source_id}));
        registrations.spawn(request(req));
    }
    let mut contact_id = 0;
    while let Some(answer) = registrations.join_next().await {
        let answer = answer.expect("task");
        assert_eq!(answer.status, 201, "{answer:?}");
        contact_id = answer.body["id"].as_i64().expect("contact id");
    }
    Fixture {
        source_id,
        contact_id,
    }
}

/// Waits until `/health` answers 200 again, without touching the server.
async fn await_recovery(client: &reqwest::Client, server: &mut ServerProcess) -> Duration {
    let started = Instant::now();
    loop {
        let health = request(client.get(format!("{}/health", server.base))).await;
        if health.status == 200 {
            return started.elapsed();
        }
        health.assert_unavailable("/health while recovering");
        server.assert_alive();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not recover:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How the database goes away.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// The proxy closes every connection and refuses new ones: the network view of a
    /// stopped server.
    Proxy,
    /// The server itself ends every session of the database (`pg_terminate_backend`, the
    /// FATAL 57P01 "terminating connection due to administrator command" a shutting-down
    /// PostgreSQL sends) and refuses new ones (`ALLOW_CONNECTIONS false`).
    Terminate,
}

/// A way to take the database away and bring it back.
enum Outage {
    Proxy(Proxy),
    Terminate {
        admin: sea_orm::DatabaseConnection,
        name: String,
    },
}

impl Outage {
    async fn begin(&self) {
        match self {
            Self::Proxy(proxy) => proxy.cut().await,
            Self::Terminate { admin, name } => {
                admin_sql(
                    admin,
                    &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"),
                )
                .await;
                admin_sql(
                    admin,
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    ),
                )
                .await;
                // pg_terminate_backend only signals: wait until the sessions are gone.
                let deadline = Instant::now() + Duration::from_secs(10);
                while sessions(admin, name).await > 0 {
                    assert!(
                        Instant::now() < deadline,
                        "sessions of {name} outlived termination"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn end(&self) {
        match self {
            Self::Proxy(proxy) => proxy.restore().await,
            Self::Terminate { admin, name } => {
                admin_sql(
                    admin,
                    &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"),
                )
                .await;
            }
        }
    }
}

/// Sessions connected to database `name`, other than this one.
async fn sessions(admin: &sea_orm::DatabaseConnection, name: &str) -> i64 {
    use sea_orm::ConnectionTrait as _;
    let sql = format!(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    admin
        .query_one_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            sql,
        ))
        .await
        .expect("count sessions")
        .and_then(|row| row.try_get::<i64>("", "n").ok())
        .expect("a count")
}

async fn admin_sql(admin: &sea_orm::DatabaseConnection, sql: &str) {
    use sea_orm::ConnectionTrait as _;
    admin
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// A database on the shared test server and a crm-api on it, with a way to take the
/// database away.
async fn setup(
    client: &reqwest::Client,
    mode: Mode,
) -> (TestDatabase, Outage, ServerProcess, Fixture) {
    let db = TestDatabase::create(Backend::Postgres).await;
    let (outage, url) = match mode {
        Mode::Proxy => {
            let (upstream, via) = split_url(&db.url);
            let proxy = Proxy::start(upstream).await;
            let url = via(proxy.port);
            (Outage::Proxy(proxy), url)
        }
        Mode::Terminate => {
            let admin_url =
                std::env::var(crm_store::testing::POSTGRES_URL_VAR).expect("the test server's URL");
            let admin = sea_orm::Database::connect(admin_url.as_str())
                .await
                .expect("connect as admin");
            let name = db
                .url
                .rsplit('/')
                .next()
                .expect("a database name")
                .to_owned();
            (Outage::Terminate { admin, name }, db.url.clone())
        }
    };
    let server = start_server(&url, client).await;
    let fixture = fixture(client, &server.base).await;
    (db, outage, server, fixture)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        // Far beyond FAIL_FAST: a hang shows up as a slow answer, not a client error.
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client")
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

/// The database goes away between requests: every kind of request answers 503 fast, and
/// once it is back everything works again, twice over, without a restart.
async fn outage_answers_503_fast_and_recovers_without_restart(mode: Mode) {
    let client = client();
    let (db, outage, mut server, fixture) = setup(&client, mode).await;
    let base = server.base.clone();
    let Fixture {
        source_id,
        contact_id,
    } = fixture;

    outage.begin().await;

    // One of each kind of request, one after another: the first ones meet the pooled
    // connections that were closed, the later ones a refused connect.
    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("GET /health", client.get(format!("{base}/health"))),
        (
            "GET /api/operators",
            client.get(format!("{base}/api/operators")),
        ),
        (
            "POST /api/contacts",
            client
                .post(format!("{base}/api/contacts"))
                .json(&json!({"external_lead_id": "during-1", "source_id": source_id})),
        ),
        (
            "POST /api/contacts/{id}/close",
            client.post(format!("{base}/api/contacts/{contact_id}/close")),
        ),
        (
            "GET /api/stats/operators",
            client.get(format!("{base}/api/stats/operators")),
        ),
        (
            "GET /api/contacts/{id}",
            client.get(format!("{base}/api/contacts/{contact_id}")),
        ),
        ("GET /health again", client.get(format!("{base}/health"))),
    ];
    for (what, req) in requests {
        request(req).await.assert_unavailable(what);
    }

    // Many at once: more than the pool has connections, so they also queue for one.
    let mut burst = JoinSet::new();
    for i in 0..24 {
        let req = client.post(format!("{base}/api/contacts")).json(
            &json!({"external_lead_id": format!("during-burst-{i}"), "source_id": source_id}),
        );
        burst.spawn(request(req));
    }
    let started = Instant::now();
    while let Some(answer) = burst.join_next().await {
        answer
            .expect("task")
            .assert_unavailable("a registration of a concurrent burst");
    }
    assert!(
        started.elapsed() < FAIL_FAST,
        "the burst took {:?}",
        started.elapsed()
    );
    server.assert_alive();

    outage.end().await;
    let recovered = await_recovery(&client, &mut server).await;
    eprintln!("healthy again {recovered:?} after the database came back");

    let after = request(
        client
            .post(format!("{base}/api/contacts"))
            .json(&json!({"external_lead_id": "after", "source_id": source_id})),
    )
    .await;
    assert_eq!(after.status, 201, "{after:?}");
    let closed = request(client.post(format!("{base}/api/contacts/{contact_id}/close"))).await;
    assert_eq!(closed.status, 200, "{closed:?}");
    assert_eq!(closed.body["status"], "closed");
    // Nothing of the failed requests was written.
    let leads = request(client.get(format!("{base}/api/leads?limit=1000"))).await;
    assert_eq!(leads.status, 200);
    let names: Vec<&str> = leads
        .body
        .as_array()
        .expect("leads")
        .iter()
        .filter_map(|l| l["external_id"].as_str())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("during")),
        "a failed registration left a lead: {names:?}"
    );
    assert_eq!(names.len(), 9, "{names:?}");
    assert_counters_match_rows(&client, &base).await;
    server.assert_alive();

    // A second outage behaves the same: the pool's state after a recovery is sound.
    outage.begin().await;
    request(client.get(format!("{base}/api/operators")))
        .await
        .assert_unavailable("GET /api/operators in a second outage");
    outage.end().await;
    await_recovery(&client, &mut server).await;
    server.assert_alive();

    drop(server);
    drop(outage);
    db.drop_database().await;
}

/// Requests running when the database goes away: each is either done (201) or answered
/// 503 `unavailable`, never 500, and fast; afterwards the counters still equal the rows
/// (a registration cut mid-transaction left nothing behind).
async fn requests_in_flight_when_the_database_goes_away_answer_503(mode: Mode) {
    let client = client();
    let (db, outage, mut server, fixture) = setup(&client, mode).await;
    let base = server.base.clone();
    let source_id = fixture.source_id;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = JoinSet::new();
    for w in 0..8 {
        let client = client.clone();
        let base = base.clone();
        let mut stopped = stopped.clone();
        workers.spawn(async move {
            let mut answers = Vec::new();
            for i in 0.. {
                let req = client.post(format!("{base}/api/contacts")).json(
                    &json!({"external_lead_id": format!("w{w}-{i}"), "source_id": source_id}),
                );
                tokio::select! {
                    answer = request(req) => answers.push(answer),
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
            }
            answers
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    outage.begin().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send_replace(true);
    let mut answers = Vec::new();
    while let Some(done) = workers.join_next().await {
        answers.extend(done.expect("worker"));
    }
    let created = answers.iter().filter(|a| a.status == 201).count();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 201).collect();
    eprintln!(
        "{created} registered before the cut, {} answered during it",
        failed.len()
    );
    assert!(created > 0, "nothing was registered before the cut");
    assert!(!failed.is_empty(), "no request met the outage");
    let wrong: Vec<&&Answer> = failed
        .iter()
        .filter(|a| a.status != 503 || a.body["code"] != "unavailable")
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} registrations in flight at the cut were not answered 503 unavailable: \
         {wrong:?}\nthe server logged:\n{}",
        wrong.len(),
        failed.len(),
        failures(&server)
    );
    for answer in failed {
        answer.assert_unavailable("a registration in flight at the cut");
    }
    server.assert_alive();

    outage.end().await;
    await_recovery(&client, &mut server).await;
    assert_counters_match_rows(&client, &base).await;
    drop(server);
    drop(outage);
    db.drop_database().await;
}

/// Runs each scenario once per [`Mode`].
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        mod proxy_cut {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Mode::Proxy).await;
                }
            )*
        }
        mod sessions_terminated {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Mode::Terminate).await;
                }
            )*
        }
    };
}

in_every_mode!(
    outage_answers_503_fast_and_recovers_without_restart,
    requests_in_flight_when_the_database_goes_away_answer_503,
);
