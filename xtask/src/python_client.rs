//! The Python client phase of `cargo xtask test`: generates a client from the committed
//! `docs/openapi.json` with openapi-python-client (installed once, pinned, into
//! `target/client-venv`), starts crm-api on a fresh SQLite database as fuzz-api does, and
//! runs `xtask/python/client_walkthrough.py` through it: the README's walkthrough, then a
//! 409 and a 422 parsed into the document's problem type.

use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::fuzz_api::{self, Server};

/// Exactly what `pip freeze` showed after installing the generator (0.29.1 is the version
/// checked to make a `Problem` model of our document), so a later release cannot change
/// the client. The generated client needs only httpx and attrs from them.
const PINS: &[&str] = &[
    "openapi-python-client==0.29.1",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "attrs==26.1.0",
    "certifi==2026.10.19.post1",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "httpx==0.28.1",
    "idna==3.21",
    "Jinja2==3.1.6",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "mdurl==0.1.2",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "Pygments==2.21.0",
    "rich==15.0.0",
    "ruamel.yaml==0.19.1",
    "ruff==0.17.6",
    "shellingham==1.5.4",
    "typer==0.27.3",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
];

pub fn run() -> Result<()> {
    let root = crate::project_root();
    let target = fuzz_api::target_dir(&root);
    let venv = target.join("client-venv");
    let generator = fuzz_api::install(&venv, PINS, "openapi-python-client")?;
    let work = tempfile::Builder::new()
        .prefix("crm-client-")
        .tempdir()
        .context("create a temporary directory")?;
    // The venv's bin first on PATH: the generator formats its output with the venv's ruff.
    let path = std::env::join_paths(std::iter::once(venv.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let status = Command::new(&generator)
        .current_dir(work.path())
        .env("PATH", &path)
        .args(["generate", "--meta", "none", "--path"])
        .arg(root.join("docs/openapi.json"))
        .arg("--output-path")
        .arg(work.path().join("crm_client"))
        .status()
        .context("run openapi-python-client")?;
    ensure!(status.success(), "openapi-python-client generate failed");

    let crm_api = fuzz_api::build_server(&root, &target)?;
    let server = Server::start(&crm_api, work.path())?;
    let status = Command::new(venv.join("bin/python"))
        .current_dir(work.path())
        .arg(root.join("xtask/python/client_walkthrough.py"))
        .arg(format!("http://{}", server.addr))
        .env("PYTHONPATH", work.path())
        .env("CRM_ADMIN_TOKEN", &server.token)
        .status()
        .context("run the client walkthrough")?;
    let log = server.stop();
    if !status.success() {
        eprintln!("xtask: the server's log:\n{log}");
        bail!("the generated Python client failed the walkthrough ({status})");
    }
    Ok(())
}
