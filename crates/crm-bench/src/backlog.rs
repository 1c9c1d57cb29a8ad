//! The backlog scenario's second half: with the queue filled by the measured load (every
//! operator switched off), the operators are switched on one after another, and the run
//! reports how long the queue took to empty and how many contacts each operator took.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Value, json};

use crate::{http::Connection, scenario::Seeded};

/// How long the drain may take before the run gives up.
const CEILING: Duration = Duration::from_secs(300);

/// What the switch-on did.
#[derive(Debug, Clone)]
pub struct Drained {
    /// Contacts waiting before the first operator was switched on.
    pub waiting_before: i64,
    /// From the first switch-on until `GET /api/queue` was empty.
    pub took: Duration,
    /// Until the last switch-on was answered (on SQLite each answer comes after its drain).
    pub switched_on: Duration,
    /// Open contacts per operator afterwards, in the order they were switched on.
    pub taken: Vec<i64>,
}

impl Drained {
    /// One line for the report and the CSV's free-text column.
    pub fn summary(&self) -> String {
        let taken: Vec<String> = self.taken.iter().map(i64::to_string).collect();
        format!(
            "backlog: {} waiting, empty {:.3} s after the first of {} operators was switched on \
             (last switch-on answered at {:.3} s); taken in switch-on order: {}",
            self.waiting_before,
            self.took.as_secs_f64(),
            self.taken.len(),
            self.switched_on.as_secs_f64(),
            taken.join("/")
        )
    }
}

/// How many contacts wait, over every source.
pub(crate) async fn waiting(conn: &mut Connection) -> Result<i64> {
    let queue = conn
        .call(Method::GET, "/api/queue?limit=1000", None)
        .await?;
    let rows = queue.as_array().context("GET /api/queue answers a list")?;
    Ok(rows.iter().filter_map(|q| q["waiting"].as_i64()).sum())
}

/// Switches every seeded operator on, in order, then waits for the queue to be empty.
pub async fn switch_on(target: SocketAddr, seeded: &Seeded) -> Result<Drained> {
    let mut conn = Connection::new(target);
    let waiting_before = waiting(&mut conn).await?;
    let started = Instant::now();
    for operator in &seeded.operators {
        conn.call(
            Method::PATCH,
            &format!("/api/operators/{}", operator.id),
            Some(&json!({"is_active": true})),
        )
        .await?;
    }
    let switched_on = started.elapsed();
    while waiting(&mut conn).await? > 0 {
        if started.elapsed() > CEILING {
            bail!("the queue did not empty within {} s", CEILING.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let mut taken = Vec::new();
    for operator in &seeded.operators {
        let got: Value = conn
            .call(
                Method::GET,
                &format!("/api/operators/{}", operator.id),
                None,
            )
            .await?;
        taken.push(got["active_contacts"].as_i64().context("active_contacts")?);
    }
    Ok(Drained {
        waiting_before,
        took,
        switched_on,
        taken,
    })
}
