//! `--preload N`: stores N contacts directly in SQL while no server runs, to show how the
//! cost of a registration grows with the data. As in real life most are closed (a few
//! unassigned); about 5 % are open, assigned to the seeded operators but never more than
//! half an operator's limit, and each operator's counter is then set from its open rows,
//! so the counters stay exact. Half as many leads as contacts: leads come back. Each
//! contact gets the first entry of its decision history, as the server writes it (at the
//! time of the preload, so `--reports` reads a day of that many decisions).

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use chrono::{SecondsFormat, Utc};
use rusqlite::{Connection, params};
use serde_json::json;

use crate::{postgres, scenario::Seeded};

/// What was stored.
#[derive(Debug, Clone, Copy)]
pub struct Preloaded {
    pub contacts: u64,
    pub open: u64,
    pub leads: u64,
}

/// The rows to write, worked out once for both backends.
struct Layout {
    leads: u64,
    closed: u64,
    /// Every (source, operator) pair with a weight, and the decision stored with
    /// contacts placed through it; closed contacts cycle through them.
    pairs: Vec<(i64, i64, String)>,
    /// Open contacts per operator: (operator id, source id, decision, count).
    open: Vec<(i64, i64, String, u64)>,
}

/// Every 50th closed contact had no operator.
const UNASSIGNED_EVERY: u64 = 50;
/// The stored payload (JSON text, as the server stores it).
const PAYLOAD: &str = "\"preloaded by cargo xtask bench\"";

/// A count as SQLite's integer (rusqlite binds no unsigned types).
fn int(n: impl TryInto<i64>) -> Result<i64> {
    n.try_into().ok().context("count out of range")
}

fn layout(seeded: &Seeded, n: u64) -> Layout {
    // A decision record in the keyed form (crm-core's `Decision`, version 2), which the
    // server reads as it reads its own compact one, for a draw through `chosen` from
    // `source`.
    let decision = |source: usize, chosen: i64| {
        let candidates: Vec<_> = seeded.sources[source]
            .weights
            .iter()
            .map(|&(op, weight)| {
                json!({
                    "id": seeded.operators[op].id,
                    "w": weight,
                    "load": 0,
                    "max": seeded.operators[op].max_active_contacts,
                })
            })
            .collect();
        let total: i64 = seeded.sources[source].weights.iter().map(|w| w.1).sum();
        json!({"v": 2, "candidates": candidates, "total": total, "draw": 0, "chosen": chosen})
            .to_string()
    };
    let mut pairs = Vec::new();
    for (s, source) in seeded.sources.iter().enumerate() {
        for &(op, _) in &source.weights {
            let operator = seeded.operators[op].id;
            pairs.push((source.id, operator, decision(s, operator)));
        }
    }
    let per_operator = n / 20 / (seeded.operators.len() as u64).max(1);
    let mut open = Vec::new();
    for (i, operator) in seeded.operators.iter().enumerate() {
        let Some(s) = seeded
            .sources
            .iter()
            .position(|s| s.weights.iter().any(|w| w.0 == i))
        else {
            continue;
        };
        let half = u64::try_from(operator.max_active_contacts / 2).unwrap_or(0);
        let count = per_operator.min(half);
        if count > 0 {
            open.push((
                operator.id,
                seeded.sources[s].id,
                decision(s, operator.id),
                count,
            ));
        }
    }
    let open_total: u64 = open.iter().map(|o| o.3).sum();
    Layout {
        leads: (n / 2).max(1),
        closed: n.saturating_sub(open_total),
        pairs,
        open,
    }
}

/// Preloads an SQLite database file (the server must be stopped).
pub fn sqlite(path: &Path, seeded: &Seeded, n: u64) -> Result<Preloaded> {
    let layout = layout(seeded, n);
    let mut db = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    db.execute_batch("PRAGMA cache_size = -262144; PRAGMA foreign_keys = ON;")?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let tx = db.transaction()?;
    tx.execute(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?1) \
         INSERT INTO leads (external_id, created_at) SELECT 'pre-' || i, ?2 FROM s",
        params![int(layout.leads)?, now],
    )?;
    let first_lead: i64 = tx.query_row(
        "SELECT id FROM leads WHERE external_id = 'pre-0'",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "CREATE TEMP TABLE bench_pairs (k INTEGER PRIMARY KEY, source_id INTEGER, \
         operator_id INTEGER, decision TEXT)",
        [],
    )?;
    for (k, (source, operator, decision)) in layout.pairs.iter().enumerate() {
        tx.execute(
            "INSERT INTO bench_pairs VALUES (?1, ?2, ?3, ?4)",
            params![int(k)?, source, operator, decision],
        )?;
    }
    if layout.closed > 0 {
        tx.execute(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?1) \
             INSERT INTO contacts (lead_id, source_id, operator_id, status, payload, decision, \
                                   registered_operator_id, created_at, closed_at) \
             SELECT ?2 + i % ?3, p.source_id, \
                    CASE WHEN i % ?4 = ?4 - 1 THEN NULL ELSE p.operator_id END, \
                    'closed', ?5, CASE WHEN i % ?4 = ?4 - 1 THEN NULL ELSE p.decision END, \
                    CASE WHEN i % ?4 = ?4 - 1 THEN NULL ELSE p.operator_id END, ?6, ?6 \
             FROM s JOIN bench_pairs p ON p.k = i % ?7",
            params![
                int(layout.closed)?,
                first_lead,
                int(layout.leads)?,
                int(UNASSIGNED_EVERY)?,
                PAYLOAD,
                now,
                int(layout.pairs.len())?
            ],
        )?;
    }
    for (operator, source, decision, count) in &layout.open {
        tx.execute(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?1) \
             INSERT INTO contacts (lead_id, source_id, operator_id, status, payload, decision, \
                                   registered_operator_id, created_at) \
             SELECT ?2 + (i * 7919 + ?3) % ?4, ?5, ?3, 'open', ?6, ?7, ?3, ?8 FROM s",
            params![
                int(*count)?,
                first_lead,
                operator,
                int(layout.leads)?,
                source,
                PAYLOAD,
                decision,
                now
            ],
        )?;
    }
    tx.execute(
        "UPDATE operators SET open_contacts = (SELECT count(*) FROM contacts c \
         WHERE c.operator_id = operators.id AND c.status = 'open')",
        [],
    )?;
    tx.execute("DROP TABLE bench_pairs", [])?;
    tx.commit()?;
    // Leave no WAL behind: the server starts on a checkpointed file, as after a restart.
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(summary(&layout))
}

/// Preloads a PostgreSQL database through `psql` (the servers must be stopped), then
/// vacuums and analyses it, as autovacuum would soon do on a live database.
pub fn postgres(url: &str, seeded: &Seeded, n: u64) -> Result<Preloaded> {
    let layout = layout(seeded, n);
    let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = String::from("\\set ON_ERROR_STOP on\nBEGIN;\n");
    sql += &format!(
        "INSERT INTO leads (external_id, created_at) \
         SELECT 'pre-' || i, now() FROM generate_series(0, {}) AS i;\n",
        layout.leads - 1
    );
    sql += "CREATE TEMP TABLE bench_pairs (k int PRIMARY KEY, source_id bigint, \
            operator_id bigint, decision text) ON COMMIT DROP;\n";
    for (k, (source, operator, decision)) in layout.pairs.iter().enumerate() {
        sql += &format!(
            "INSERT INTO bench_pairs VALUES ({k}, {source}, {operator}, {});\n",
            text(decision)
        );
    }
    let first_lead = "(SELECT id FROM leads WHERE external_id = 'pre-0')";
    let payload = text(PAYLOAD);
    if layout.closed > 0 {
        sql += &format!(
            "INSERT INTO contacts (lead_id, source_id, operator_id, status, payload, decision, \
                                   registered_operator_id, created_at, closed_at) \
             SELECT {first_lead} + i % {leads}, p.source_id, \
                    CASE WHEN i % {every} = {every} - 1 THEN NULL ELSE p.operator_id END, \
                    'closed', {payload}, \
                    CASE WHEN i % {every} = {every} - 1 THEN NULL ELSE p.decision END, \
                    CASE WHEN i % {every} = {every} - 1 THEN NULL ELSE p.operator_id END, now(), now() \
             FROM generate_series(0, {last}) AS i JOIN bench_pairs p ON p.k = i % {pairs};\n",
            leads = layout.leads,
            every = UNASSIGNED_EVERY,
            last = layout.closed - 1,
            pairs = layout.pairs.len(),
        );
    }
    for (operator, source, decision, count) in &layout.open {
        sql += &format!(
            "INSERT INTO contacts (lead_id, source_id, operator_id, status, payload, decision, \
                                   registered_operator_id, created_at) \
             SELECT {first_lead} + (i * 7919 + {operator}) % {leads}, {source}, {operator}, \
                    'open', {payload}, {decision}, {operator}, now() \
             FROM generate_series(0, {last}) AS i;\n",
            leads = layout.leads,
            decision = text(decision),
            last = count - 1,
        );
    }
    sql += "UPDATE operators SET open_contacts = (SELECT count(*) FROM contacts c \
            WHERE c.operator_id = operators.id AND c.status = 'open');\n\
            COMMIT;\nVACUUM ANALYZE;\n";
    let mut psql = Command::new(format!("{}/psql", postgres::BIN))
        .args(["-X", "-q", "-d", url, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run psql")?;
    psql.stdin
        .take()
        .context("psql's stdin")?
        .write_all(sql.as_bytes())?;
    let output = psql.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "preload failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(summary(&layout))
}

fn summary(layout: &Layout) -> Preloaded {
    let open: u64 = layout.open.iter().map(|o| o.3).sum();
    Preloaded {
        contacts: layout.closed + open,
        open,
        leads: layout.leads,
    }
}
