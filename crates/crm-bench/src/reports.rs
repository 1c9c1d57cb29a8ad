//! `--reports`: the supervisor's reports timed on the data a run left behind (with
//! `--preload N`, a day of N decisions): the first source's distribution over the last 24
//! hours, and a dry run of its weights. Printed beside the run's figures, not in the CSV.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hyper::Method;
use serde_json::{Value, json};

use crate::{http::Connection, scenario::Seeded};

/// How many times each report is asked for.
const ROUNDS: usize = 5;

/// One line: each report's median and best time, and how much it read.
pub async fn time(target: SocketAddr, seeded: &Seeded) -> Result<String> {
    let source = seeded.sources.first().context("a seeded source")?;
    let mut conn = Connection::with_timeout(target, Duration::from_secs(300));
    let distribution = format!("/api/sources/{}/distribution", source.id);
    let (report, read) = timed(&mut conn, Method::GET, &distribution, None).await?;
    let weights: Vec<Value> = source
        .weights
        .iter()
        .map(|&(op, weight)| json!({"operator_id": seeded.operators[op].id, "weight": weight}))
        .collect();
    let body = json!({"operators": weights, "seed": 1, "picks": 10_000});
    let simulate = format!("/api/sources/{}/simulate", source.id);
    let (dry_run, _) = timed(&mut conn, Method::POST, &simulate, Some(&body)).await?;
    Ok(format!(
        "distribution of source {} over 24 h ({} decisions): {report}; \
         dry run of its {} weights, 10,000 picks: {dry_run}",
        source.id,
        read["decisions"],
        weights.len(),
    ))
}

/// `median X ms, best Y ms` of [`ROUNDS`] calls, and the last answer.
async fn timed(
    conn: &mut Connection,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(String, Value)> {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut answer = Value::Null;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        answer = conn.call(method.clone(), path, body).await?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((
        format!(
            "median {:.1} ms, best {:.1} ms",
            times[ROUNDS / 2],
            times[0]
        ),
        answer,
    ))
}
