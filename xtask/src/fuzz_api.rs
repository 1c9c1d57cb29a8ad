//! `cargo xtask fuzz-api`: schemathesis against the OpenAPI document of a live server.
//!
//! Installs a pinned schemathesis once into `target/fuzz-venv`, builds `crm-api`, starts it
//! on a fresh SQLite database on a free port with a random admin token, seeds one operator,
//! one source with a weight, one contact and one webhook endpoint (so id 1 exists for
//! each), then runs schemathesis over every operation but the event stream (which never
//! ends) with that token, a fixed seed and a bounded number of examples. Any failure fails
//! the task; the server is stopped in every case.

use std::{
    fs,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;

use crate::api_client::Api;

/// Exactly what `pip freeze` showed for the run this task was tuned with: schemathesis,
/// hypothesis and everything they pull in, so a later release cannot change the run.
const PINS: &[&str] = &[
    "schemathesis==4.32.5",
    "hypothesis==6.170.17",
    "hypothesis-graphql==0.13.5",
    "jsonschema_rs==0.60.3",
    "anyio==4.16.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.2",
    "click==8.5.1",
    "graphql-core==3.3.2",
    "harfile==0.6.0",
    "idna==3.20",
    "iniconfig==2.3.1",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "mdurl==0.1.2",
    "packaging==26.3",
    "pluggy==1.7.0",
    "Pygments==2.21.0",
    "pyrate-limiter==4.5.1",
    "pytest==9.2.0",
    "PyYAML==6.0.4",
    "requests==2.34.2",
    "rich==15.0.0",
    "sortedcontainers==2.4.0",
    "typing_extensions==4.16.0",
    "urllib3==2.8.0",
    "Werkzeug==3.1.9",
];

/// Every schemathesis check that can hold for this API: `all` but two.
/// `positive_data_acceptance` expects every schema-valid request to succeed, while the
/// contract answers 422 for rules JSON Schema cannot state here: an operator listed twice in
/// a weight list, an operator id in a body that does not exist, both `source_id` and
/// `source_code` in one registration. `object_level_authorization` needs two users whose
/// data the API keeps apart; it has one admin credential.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      negative_data_rejection,missing_required_header,unsupported_method,\
                      allow_header_conformance,use_after_free,ensure_resource_availability,\
                      ignored_auth";

/// Examples per operation unless `--max-examples` says otherwise.
const DEFAULT_EXAMPLES: u32 = 100;
/// A fixed seed: the same cases every run, so a failure reproduces.
const DEFAULT_SEED: u64 = 20_261_125;
/// How long the server may take to answer `/health`.
const STARTUP: Duration = Duration::from_secs(60);

/// `cargo xtask fuzz-api [OPTIONS]`. Set CRM_FUZZ_PYTHON to the Python (>= 3.11) that
/// creates the venv (default python3).
#[derive(clap::Parser)]
pub struct Options {
    /// Examples per operation.
    #[arg(long, default_value_t = DEFAULT_EXAMPLES)]
    max_examples: u32,
    /// Hypothesis seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

pub fn run(options: &Options) -> Result<()> {
    let (examples, seed) = (options.max_examples, options.seed);
    let started = Instant::now();
    let root = crate::project_root();
    let target = target_dir(&root);
    let schemathesis = install(&target.join("fuzz-venv"), PINS, "schemathesis")?;

    let crm_api = build_server(&root, &target)?;
    let work = tempfile::Builder::new()
        .prefix("crm-fuzz-")
        .tempdir()
        .context("create a temporary directory")?;
    let server = Server::start(&crm_api, work.path())?;
    let base = format!("http://{}", server.addr);
    seed_data(&server).context("seed the server")?;

    eprintln!(
        "xtask: schemathesis against {base} ({examples} examples per operation, seed {seed})"
    );
    let status = Command::new(&schemathesis)
        .current_dir(work.path())
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        // One worker: CPython 3.11 before 3.11.8 can fail `ast.parse` in concurrent
        // threads (gh-106905), which Hypothesis calls while describing strategies.
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        // The event stream never ends, so no request to it completes; it has its own
        // tests (crates/crm-api/tests/events.rs). Nothing else is excluded.
        .args(["--exclude-operation-id", "stream_events"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", server.token),
        ])
        .env("NO_COLOR", "1")
        .status()
        .context("run schemathesis")?;
    let log = server.stop();
    if !status.success() {
        eprintln!("xtask: the server's log:\n{log}");
        bail!("schemathesis found failures ({status})");
    }
    eprintln!("xtask: fuzz-api passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Builds crm-api (debug) and returns its executable.
pub fn build_server(root: &Path, target: &Path) -> Result<PathBuf> {
    eprintln!("xtask: building crm-api");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "-q", "-p", "crm-api", "--locked"])
        .status()
        .context("run cargo build")?;
    ensure!(status.success(), "cargo build -p crm-api failed");
    Ok(target.join("debug/crm-api"))
}

/// The target directory the build writes to.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Creates the venv at `venv` and installs `pins` into it unless a previous run did exactly
/// that; returns the path of `program` in it.
pub fn install(venv: &Path, pins: &[&str], program: &str) -> Result<PathBuf> {
    let exe = venv.join("bin").join(program);
    let stamp = venv.join("crm-pins.txt");
    let wanted = pins.join("\n");
    if exe.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(exe);
    }
    let python = std::env::var_os("CRM_FUZZ_PYTHON").unwrap_or_else(|| "python3".into());
    eprintln!(
        "xtask: installing {program} into {} with {}",
        venv.display(),
        python.to_string_lossy()
    );
    let _ = fs::remove_dir_all(venv);
    let status = Command::new(&python)
        .args(["-c", "import sys; sys.exit(sys.version_info < (3, 11))"])
        .status()
        .with_context(|| format!("run {} (set CRM_FUZZ_PYTHON)", python.to_string_lossy()))?;
    ensure!(
        status.success(),
        "{program} needs Python 3.11 or newer; set CRM_FUZZ_PYTHON to one"
    );
    let status = Command::new(&python)
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status()
        .context("create the venv")?;
    ensure!(status.success(), "python -m venv {} failed", venv.display());
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(pins)
        .status()
        .context("run pip")?;
    ensure!(status.success(), "pip install {program} failed");
    fs::write(&stamp, wanted).context("write the venv stamp")?;
    Ok(exe)
}

/// A `crm-api` process on a temporary database; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// `CRM_ADMIN_TOKEN` of the server, so schemathesis also checks that requests
    /// without it are refused (`ignored_auth`).
    pub token: String,
    log: PathBuf,
}

impl Server {
    /// Starts `binary` in `dir` (so no `.env` of the project applies) on a fresh SQLite
    /// file, a free port and a random admin token, and waits until `/health` answers 200.
    pub fn start(binary: &Path, dir: &Path) -> Result<Self> {
        let addr = free_port()?;
        let token = random_token()?;
        let log = dir.join("server.log");
        let out = fs::File::create(&log).context("create the server log")?;
        let database = format!("sqlite://{}?mode=rwc", dir.join("fuzz.db").display());
        let mut command = Command::new(binary);
        // Settings of the caller's shell (a token, another database) must not apply.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CRM_") {
                command.env_remove(name);
            }
        }
        let child = command
            .current_dir(dir)
            .args(["--database-url", &database, "--bind", &addr.to_string()])
            .env("CRM_ADMIN_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("clone the log file")?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut server = Self {
            child,
            addr,
            token,
            log,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if server.api().send("GET", "/health", None).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("crm-api exited with {status}:\n{}", server.stop());
            }
            if Instant::now() > deadline {
                bail!(
                    "crm-api did not answer /health within {STARTUP:?}:\n{}",
                    server.stop()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server and returns its log.
    pub fn stop(mut self) -> String {
        self.kill();
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client of the server with its admin token.
    pub fn api(&self) -> Api {
        Api::new(format!("http://{}", self.addr), Some(self.token.clone()))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("find a free port")?;
    listener.local_addr().context("find a free port")
}

/// One operator, a source that gives it all contacts, and a contact: id 1 of each exists,
/// so generated ids sometimes hit a real entity.
fn seed_data(server: &Server) -> Result<()> {
    let steps = [
        (
            "POST",
            "/api/operators",
            json!({"name": "Fuzz operator", "max_active_contacts": 1000}),
        ),
        (
            "POST",
            "/api/sources",
            json!({"name": "Fuzz source", "code": "fuzz"}),
        ),
        (
            "PUT",
            "/api/sources/1/operators",
            json!({"operators": [{"operator_id": 1, "weight": 10}]}),
        ),
        (
            "POST",
            "/api/contacts",
            json!({"external_lead_id": "fuzz-lead", "source_id": 1, "payload": {"seed": true}}),
        ),
        // `.invalid` never resolves (RFC 2606): its deliveries fail at once and wait.
        (
            "POST",
            "/api/webhooks",
            json!({"url": "https://fuzz.invalid/hook"}),
        ),
    ];
    let api = server.api();
    for (method, path, body) in steps {
        let answer = api.send(method, path, Some(&body))?;
        ensure!(
            answer["id"] == 1,
            "{method} {path} did not produce id 1: {answer}"
        );
    }
    Ok(())
}

/// 32 hex digits from the OS's random source.
fn random_token() -> Result<String> {
    let mut bytes = [0_u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
