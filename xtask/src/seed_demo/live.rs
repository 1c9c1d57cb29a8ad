//! The live day after the seed: contacts keep arriving through the demo's sources and
//! operators keep closing them, in alternating busy and calm spells, until Ctrl-C. In a
//! busy spell more arrive than are closed and the queue grows; in a calm one closing
//! frees places and the server drains the queue, oldest first. The supervisor's page at
//! `/` shows it as it happens.

use std::time::Duration;

use anyhow::Result;

use super::{SplitMix64, plan, waiting};
use crate::api_client::Api;

/// One step of the live day.
const STEP: Duration = Duration::from_millis(500);

/// Steps per spell: 20 s busy, then 20 s calm.
const SPELL: u64 = 40;

/// Runs the live day until the process is stopped.
pub(super) fn run(api: &Api) -> Result<()> {
    println!(
        "live: contacts keep arriving and closing; watch them at {}/ (Ctrl-C stops)",
        api.base
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A fresh plan each run: its leads are new, not the seeded day's.
    let mut rng = SplitMix64(u64::try_from(started % u128::from(u64::MAX)).unwrap_or(1));
    let (mut arrived, mut closed) = (0_u64, 0_u64);
    for step in 0_u64.. {
        let busy = (step / SPELL).is_multiple_of(2);
        let (arrive, close) = if busy { (70, 30) } else { (20, 75) };
        if rng.below(100) < arrive {
            let reg = plan(&mut rng, 1).remove(0);
            api.send("POST", "/api/contacts", Some(&reg.body()))?;
            arrived += 1;
        }
        if rng.below(100) < close
            && let Some(contact) = one_assigned(api, &mut rng)?
        {
            api.send("POST", &format!("/api/contacts/{contact}/close"), None)?;
            closed += 1;
        }
        if step % SPELL == SPELL - 1 {
            let waiting = waiting(api)?.len();
            println!(
                "live: {arrived} arrived, {closed} closed so far; {waiting} waiting; a {} spell \
                 begins",
                if busy { "calm" } else { "busy" }
            );
        }
        std::thread::sleep(STEP);
    }
    Ok(())
}

/// A random open contact that has an operator, if any has.
fn one_assigned(api: &Api, rng: &mut SplitMix64) -> Result<Option<i64>> {
    let open = api.send("GET", "/api/contacts?status=open&limit=1000", None)?;
    let assigned: Vec<i64> = open
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| !c["operator_id"].is_null())
        .filter_map(|c| c["id"].as_i64())
        .collect();
    Ok((!assigned.is_empty()).then(|| *rng.pick(&assigned)))
}
