//! The demo data set in `cargo xtask test`, so `cargo xtask seed-demo` cannot rot.

use anyhow::{Context as _, Result, bail};

use super::seed;
use crate::api_client::Api;

/// What `cargo xtask test` runs so the demo cannot rot: the whole plan against a debug
/// crm-api on a fresh SQLite file, then every operator's counter checked against its open
/// contacts.
pub fn smoke() -> Result<()> {
    let root = crate::project_root();
    let crm_api = crate::fuzz_api::build_server(&root, &crate::fuzz_api::target_dir(&root))?;
    let work = tempfile::Builder::new()
        .prefix("crm-demo-")
        .tempdir()
        .context("create a temporary directory")?;
    let server = crate::fuzz_api::Server::start(&crm_api, work.path())?;
    let api = Api::new(
        format!("http://{}", server.addr),
        Some(server.token.clone()),
    );
    let seeded = seed(&api).and_then(|()| counters_match(&api));
    let log = server.stop();
    if seeded.is_err() {
        eprintln!("xtask: the server's log:\n{log}");
    }
    seeded
}

/// Every operator's counter equals its open contacts, and none is over its limit.
fn counters_match(api: &Api) -> Result<()> {
    let stats = api.send("GET", "/api/stats/operators", None)?;
    for op in stats.as_array().context("stats is a list")? {
        let id = op["operator_id"].as_i64().context("operator_id")?;
        let counter = op["open_contacts"].as_i64().context("open_contacts")?;
        let open = api.send(
            "GET",
            &format!("/api/contacts?status=open&operator_id={id}&limit=1000"),
            None,
        )?;
        let rows = open.as_array().context("contacts is a list")?.len();
        let limit = op["max_active_contacts"].as_i64().context("limit")?;
        if usize::try_from(counter).ok() != Some(rows) || counter > limit {
            bail!("operator {id}: counter {counter}, {rows} open contacts, limit {limit}");
        }
    }
    Ok(())
}
