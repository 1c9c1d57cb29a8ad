//! The `crm-api` binary run as a process, for the tests that need a real one: killed
//! mid-burst (`crash.rs`), two replicas on one database (`replicas.rs`), a database that
//! goes away (`pg_outage.rs`), slow and idle clients under a descriptor limit
//! (`slow_clients.rs`). Each of them includes it with `mod process;`.
#![allow(dead_code)] // every test uses its own part of it

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a server may take to answer `/health` after it was started.
const STARTUP: Duration = Duration::from_secs(30);

/// The URL of an SQLite file for the server.
pub fn sqlite_url(db: &Path) -> String {
    format!("sqlite://{}?mode=rwc", db.display())
}

/// A client whose timeout only catches a hang.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client")
}

/// What a request got back, and how long it took.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub took: Duration,
}

/// Sends `req`, which must be answered; the body is read as JSON (`null` when it is not).
pub async fn request(req: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
        took: started.elapsed(),
    }
}

/// A `crm-api` process, SIGKILLed when dropped, so a failing test leaves none behind.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`, once [`ServerProcess::wait_healthy`] has returned.
    pub base: String,
    log: PathBuf,
    /// The directory it runs in, when it is its own.
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts `crm-api` on `database_url` without waiting for it, in `dir` (so no
    /// developer's `.env` is read), with none of the caller's `CRM_…` settings but `env`,
    /// its stdout in `dir/<log_name>` and its stderr beside it (`.err`).
    ///
    /// It listens on a port the system picks (`127.0.0.1:0`) and logs it; [`base`] is
    /// known once [`ServerProcess::wait_healthy`] has read that line. (Picking a free port
    /// here and passing it on raced with every other socket opened in between.)
    ///
    /// [`base`]: ServerProcess::base
    pub fn spawn(dir: &Path, log_name: &str, database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_through(&[], dir, log_name, database_url, env)
    }

    /// [`ServerProcess::spawn`], with at most `nofile` open file descriptors when given
    /// (`ulimit -n`, set by `sh`, which then becomes the server: same process id).
    pub fn spawn_limited(
        dir: &Path,
        log_name: &str,
        database_url: &str,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Self {
        match nofile {
            Some(limit) => {
                let script = format!("ulimit -n {limit} && exec \"$@\"");
                Self::spawn_through(
                    &["sh", "-c", &script, "sh"],
                    dir,
                    log_name,
                    database_url,
                    env,
                )
            }
            None => Self::spawn(dir, log_name, database_url, env),
        }
    }

    /// [`ServerProcess::spawn`], run by the program `through` (with its arguments), which
    /// must end by executing its last argument, the `crm-api` binary, in its own place
    /// (so the process is the server's): `sh -c '…; exec "$@"'`, `prlimit … --`.
    pub fn spawn_through(
        through: &[&str],
        dir: &Path,
        log_name: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let log = dir.join(log_name);
        let server = env!("CARGO_BIN_EXE_crm-api");
        let mut command = match through.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(server);
                command
            }
            None => Command::new(server),
        };
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("CRM_")) {
            command.env_remove(name);
        }
        let child = command
            .current_dir(dir)
            .env("CRM_DATABASE_URL", database_url)
            .env("CRM_BIND", "127.0.0.1:0")
            // The binary's own lines (where it listens) but no access log.
            .env("RUST_LOG", "warn,crm_api=info,crm_api::gate=warn")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("log file"))
            .stderr(File::create(log.with_extension("err")).expect("log file"))
            .spawn()
            .expect("start crm-api");
        Self {
            child,
            base: String::new(),
            log,
            _dir: None,
        }
    }

    /// Where it listens, from its log line `listening on http://<address>, …`.
    fn listening(&self) -> Option<String> {
        let logs = self.logs();
        let rest = &logs[logs.find("listening on http://")? + "listening on ".len()..];
        let end = rest.find([',', ' ', '\n'])?;
        Some(rest[..end].to_owned())
    }

    /// [`ServerProcess::spawn`], then waits until it is healthy.
    pub async fn start(
        dir: &Path,
        log_name: &str,
        database_url: &str,
        env: &[(&str, &str)],
        client: &reqwest::Client,
    ) -> Self {
        let mut server = Self::spawn(dir, log_name, database_url, env);
        server.wait_healthy(client).await;
        server
    }

    /// [`ServerProcess::start`] in a temporary directory of its own, removed with it.
    pub async fn start_in_own_dir(
        database_url: &str,
        env: &[(&str, &str)],
        client: &reqwest::Client,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = Self::start(dir.path(), "server.log", database_url, env, client).await;
        server._dir = Some(dir);
        server
    }

    /// Waits until it has logged where it listens and `/health` answers 200 there; panics
    /// with the logs if the process exits or panics first, or after [`STARTUP`].
    pub async fn wait_healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.base.is_empty()
                && let Some(base) = self.listening()
            {
                self.base = base;
            }
            if !self.base.is_empty()
                && let Ok(resp) = client.get(format!("{}/health", self.base)).send().await
                && resp.status().is_success()
            {
                return;
            }
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "the server at {:?} never became healthy:\n{}",
                self.base,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time it has used so far, user and system, from `/proc/<pid>/stat` (in
    /// clock ticks of 1/100 s, Linux's fixed `USER_HZ`).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // The fields after the command name, which is in parentheses and may hold spaces;
        // utime and stime are the stat's 14th and 15th fields.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the server")
    }

    /// Panics, with the logs, if the process has exited or logged a panic.
    pub fn assert_alive(&mut self) {
        let status = self.exited();
        assert!(
            status.is_none(),
            "the server died ({status:?}):\n{}",
            self.logs()
        );
        let logs = self.logs();
        assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
    }

    /// What it wrote to stdout, then stderr.
    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("{out}{err}")
    }

    /// What it wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }

    /// `Child::kill` is SIGKILL on Unix: no shutdown hook, no drain, no flush.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("reap the server");
        assert!(!status.success(), "the server was killed, not stopped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST url` with a JSON `body`, which must answer 200 or 201; the answer's body.
pub async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let answer = request(client.post(&url).json(&body)).await;
    assert!(
        answer.status == 200 || answer.status == 201,
        "POST {url}: {answer:?}"
    );
    answer.body
}

/// Creates one operator per entry of `limits` (that limit, weight `n + 1`) and a source
/// `bot` weighted over them all; returns the source's id.
pub async fn seed_bot_source(client: &reqwest::Client, base: &str, limits: &[i64]) -> i64 {
    let mut operators = Vec::new();
    for (n, limit) in limits.iter().enumerate() {
        let op = post(
            client,
            format!("{base}/api/operators"),
            serde_json::json!({"name": format!("Operator {n}"), "max_active_contacts": limit}),
        )
        .await;
        operators.push(serde_json::json!({"operator_id": op["id"], "weight": n + 1}));
    }
    let source = post(
        client,
        format!("{base}/api/sources"),
        serde_json::json!({"name": "Bot", "code": "bot"}),
    )
    .await;
    let id = source["id"].as_i64().expect("source id");
    let weights = request(
        client
            .put(format!("{base}/api/sources/{id}/operators"))
            .json(&serde_json::json!({"operators": operators})),
    )
    .await;
    assert_eq!(weights.status, 200, "weights: {weights:?}");
    id
}

/// `GET url`, which must answer 200 with JSON.
pub async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let resp = client.get(&url).send().await.expect("answered");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// Every item of an id-paged listing (`/api/<what>`), following the pages.
pub async fn all_pages(client: &reqwest::Client, base: &str, what: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let page = get_json(
            client,
            format!("{base}/api/{what}?limit=1000&after={after}"),
        )
        .await;
        let page = page.as_array().expect("a list").clone();
        let Some(last) = page.last() else {
            return items;
        };
        after = last["id"].as_i64().expect("an id");
        items.extend(page);
    }
}

/// Every operator's counter equals its open rows (all of them, page after page) and is
/// within its limit.
pub async fn assert_counters_match_rows(client: &reqwest::Client, base: &str) {
    let contacts = all_pages(client, base, "contacts").await;
    let stats = get_json(client, format!("{base}/api/stats/operators")).await;
    assert_counters_match(stats.as_array().expect("stats"), &contacts, "");
}

/// Every operator in `stats` (`/api/stats/operators`) has a counter equal to its open
/// rows among `contacts` and within its limit; `context` starts every failure message.
pub fn assert_counters_match<'a>(
    stats: &[Value],
    contacts: impl IntoIterator<Item = &'a Value> + Clone,
    context: &str,
) {
    for op in stats {
        let id = op["operator_id"].as_i64().expect("id");
        let open_rows = contacts
            .clone()
            .into_iter()
            .filter(|c| c["operator_id"].as_i64() == Some(id) && c["status"] == "open")
            .count() as i64;
        let counter = op["open_contacts"].as_i64().expect("counter");
        let limit = op["max_active_contacts"].as_i64().expect("limit");
        assert_eq!(
            counter, open_rows,
            "{context}operator {id}: counter vs open rows"
        );
        assert!(
            counter <= limit,
            "{context}operator {id} holds {counter} > {limit}"
        );
    }
}
