//! Crash safety on SQLite: the `crm-api` binary is SIGKILLed in the middle of a burst of
//! concurrent registrations and closes, then restarted on the same file. Every contact
//! whose 201 reached the client must still be there exactly as answered, every close whose
//! 200 reached the client must have stuck, the file must pass `PRAGMA integrity_check` and
//! `PRAGMA foreign_key_check`, every operator's counter must equal its open rows and
//! stay within its limit, and the outbox must hold exactly the events of what was stored
//! (`check_events`). The restart must work although the killed process held the
//! database file's lock (the kernel releases it with the process).
//!
//! Three rounds on one file, each killed after a different number of answers.

mod process;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use process::{
    ServerProcess, all_pages, assert_counters_match, client, get_json, post, seed_bot_source,
    sqlite_url,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

/// Registrations fired per round; far more than can finish before the kill.
const BURST: usize = 1500;
/// Requests in flight at once.
const IN_FLIGHT: usize = 48;
/// External ids the burst draws from, so leads repeat.
const LEADS: usize = 150;
/// After how many 201s each round's server is killed.
const KILL_AFTER: [usize; 3] = [150, 40, 400];
/// Operators' limits: small, so they fill and free up all through the burst.
const LIMITS: [i64; 4] = [2, 3, 1, 4];

async fn start(dir: &Path, db: &Path, client: &reqwest::Client, round: usize) -> ServerProcess {
    let log = format!("round-{round}.log");
    ServerProcess::start(dir, &log, &sqlite_url(db), &[], client).await
}

async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// What one request of the burst learned.
enum Outcome {
    /// The 201 reached the client: this contact must survive.
    Registered { external_id: String, contact: Value },
    /// The 201 reached the client and so did the 200 of closing it.
    Closed { external_id: String, contact: Value },
    /// An answer, but not the expected one: a bug, whenever it came.
    Refused {
        what: &'static str,
        status: u16,
        body: Value,
    },
    /// No answer: the server died first. The write may or may not have happened.
    Unknown,
}

/// Fires the burst; once `kill_after` registrations are answered, `killed` is notified
/// and the requests still running or not yet sent meet a dead server.
async fn burst(
    client: &reqwest::Client,
    base: &str,
    source_id: i64,
    round: usize,
    kill_after: usize,
    acked: Arc<AtomicUsize>,
    killed: Arc<Notify>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let client = client.clone();
        let base = base.to_owned();
        let permits = Arc::clone(&permits);
        let acked = Arc::clone(&acked);
        let killed = Arc::clone(&killed);
        let external_id = format!("lead-{}", (i * 7 + round) % LEADS);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let body = json!({
                "external_lead_id": external_id,
                "source_id": source_id,
                "payload": {"round": round, "i": i},
            });
            let contact = match send(client.post(format!("{base}/api/contacts")).json(&body)).await
            {
                Ok((201, contact)) if contact.is_object() => contact,
                // The body was cut off by the kill: not an acknowledgement.
                Ok((201, _)) | Err(_) => return Outcome::Unknown,
                Ok((status, body)) => {
                    return Outcome::Refused {
                        what: "registration",
                        status,
                        body,
                    };
                }
            };
            if acked.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                killed.notify_one();
            }
            // Every third assigned contact is closed at once, so counters go down as
            // well as up while the server dies.
            if i % 3 == 0 && !contact["operator_id"].is_null() {
                let id = contact["id"].as_i64().expect("an id");
                match send(client.post(format!("{base}/api/contacts/{id}/close"))).await {
                    Ok((200, _)) => {
                        return Outcome::Closed {
                            external_id,
                            contact,
                        };
                    }
                    Ok((status, body)) => {
                        return Outcome::Refused {
                            what: "close",
                            status,
                            body,
                        };
                    }
                    // The registration stands; the close may or may not have happened.
                    Err(_) => {}
                }
            }
            Outcome::Registered {
                external_id,
                contact,
            }
        }));
    }
    tasks
}

/// Checks the file itself, with no server on it: the WAL a killed writer left behind is
/// read as SQLite reads it at the next start.
fn check_file(db: &Path, round: usize) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok", "round {round}: integrity_check");
    let mut fk = conn.prepare("PRAGMA foreign_key_check").expect("prepare");
    let violations = fk
        .query_map([], |row| row.get::<_, String>(0))
        .expect("foreign_key_check")
        .count();
    assert_eq!(violations, 0, "round {round}: rows whose parent is missing");
    let mut counters = conn
        .prepare(
            "SELECT o.id, o.open_contacts, o.max_active_contacts, \
             (SELECT count(*) FROM contacts c WHERE c.operator_id = o.id AND c.status = 'open') \
             FROM operators o ORDER BY o.id",
        )
        .expect("prepare");
    let rows = counters
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .expect("counters")
        .collect::<Result<Vec<_>, _>>()
        .expect("counter rows");
    assert_eq!(rows.len(), LIMITS.len(), "round {round}: operators");
    check_events(&conn, round);
    for (id, counter, limit, open_rows) in rows {
        assert_eq!(
            counter, open_rows,
            "round {round}: operator {id} counter vs rows"
        );
        assert!(
            counter <= limit,
            "round {round}: operator {id} holds {counter} > {limit}"
        );
    }
}

/// The outbox against the rows: every contact has exactly one `contact.created`, a closed
/// one exactly one `contact.closed` (an open one none), no event names a contact that
/// does not exist, and each contact's latest event reports its operator and status as
/// stored. So every committed change has its event and no event reports a change that
/// was not committed.
fn check_events(conn: &rusqlite::Connection, round: usize) {
    let mut contacts: HashMap<i64, (Option<i64>, String)> = HashMap::new();
    let mut statement = conn
        .prepare("SELECT id, operator_id, status FROM contacts")
        .expect("prepare");
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
        .expect("contacts");
    for row in rows {
        let (id, state) = row.expect("a contact");
        contacts.insert(id, state);
    }
    let mut statement = conn
        .prepare("SELECT seq, type, contact_id, data FROM events ORDER BY seq")
        .expect("prepare");
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<i64>>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .expect("events");
    let mut counts: HashMap<(i64, String), usize> = HashMap::new();
    let mut latest: HashMap<i64, Value> = HashMap::new();
    for row in rows {
        let (seq, kind, contact, data) = row.expect("an event");
        let Some(contact) = contact else { continue };
        assert!(
            contacts.contains_key(&contact),
            "round {round}: event {seq} ({kind}) names contact {contact}, which was never stored"
        );
        *counts.entry((contact, kind)).or_default() += 1;
        latest.insert(contact, serde_json::from_str(&data).expect("event data"));
    }
    for (id, (operator, status)) in &contacts {
        let count = |kind: &str| counts.get(&(*id, kind.to_owned())).copied().unwrap_or(0);
        assert_eq!(
            count("contact.created"),
            1,
            "round {round}: contact {id}: contact.created"
        );
        let closes = usize::from(status == "closed");
        assert_eq!(
            count("contact.closed"),
            closes,
            "round {round}: contact {id}: contact.closed"
        );
        let last = &latest[id];
        assert_eq!(
            last["operator_id"],
            json!(operator),
            "round {round}: contact {id}: operator"
        );
        assert_eq!(
            last["status"],
            json!(status),
            "round {round}: contact {id}: status"
        );
    }
}

/// Through the API of the restarted server: every acknowledged contact as answered, every
/// acknowledged close closed, leads unique, counters equal to rows and within limits.
async fn check_api(
    client: &reqwest::Client,
    base: &str,
    acknowledged: &BTreeMap<i64, (String, Value, bool)>,
    round: usize,
) {
    let contacts: HashMap<i64, Value> = all_pages(client, base, "contacts")
        .await
        .into_iter()
        .map(|c| (c["id"].as_i64().expect("an id"), c))
        .collect();
    let leads = all_pages(client, base, "leads").await;
    let lead_ids: HashMap<i64, String> = leads
        .iter()
        .map(|l| {
            (
                l["id"].as_i64().expect("an id"),
                l["external_id"].as_str().expect("external id").to_owned(),
            )
        })
        .collect();
    assert_eq!(lead_ids.len(), leads.len(), "round {round}: lead ids");
    let mut external: Vec<&String> = lead_ids.values().collect();
    external.sort();
    external.dedup();
    assert_eq!(
        external.len(),
        leads.len(),
        "round {round}: a repeated external id"
    );

    for (id, (external_id, answered, closed)) in acknowledged {
        let stored = contacts
            .get(id)
            .unwrap_or_else(|| panic!("round {round}: acknowledged contact {id} is lost"));
        for field in ["lead_id", "source_id", "created_at", "payload"] {
            assert_eq!(
                stored[field], answered[field],
                "round {round}: contact {id}: {field} differs from the 201"
            );
        }
        // A contact answered waiting may have been drained to an operator since.
        if !answered["operator_id"].is_null() {
            assert_eq!(
                stored["operator_id"], answered["operator_id"],
                "round {round}: contact {id}: operator_id differs from the 201"
            );
        }
        let lead = stored["lead_id"].as_i64().expect("lead id");
        assert_eq!(
            lead_ids.get(&lead),
            Some(external_id),
            "round {round}: contact {id}: lead"
        );
        if *closed {
            assert_eq!(
                stored["status"], "closed",
                "round {round}: close of {id} lost"
            );
        }
    }

    let stats = get_json(client, format!("{base}/api/stats/operators")).await;
    let stats = stats.as_array().expect("stats");
    assert_eq!(stats.len(), LIMITS.len());
    assert_counters_match(stats, contacts.values(), &format!("round {round}: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("crm.db");
    let client = client();

    let server = start(dir.path(), &db, &client, 0).await;
    let base = server.base.clone();
    let source_id = seed_bot_source(&client, &base, &LIMITS).await;

    let mut acknowledged: BTreeMap<i64, (String, Value, bool)> = BTreeMap::new();
    let mut server = Some(server);
    for (round, &kill_after) in KILL_AFTER.iter().enumerate() {
        let live = server.take().expect("a running server");
        let acked = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(Notify::new());
        let tasks = burst(
            &client,
            &live.base,
            source_id,
            round,
            kill_after,
            Arc::clone(&acked),
            Arc::clone(&killed),
        )
        .await;
        tokio::time::timeout(Duration::from_secs(30), killed.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: {kill_after} registrations never answered"));
        live.sigkill();

        let (mut answered, mut unknown) = (0, 0);
        for task in tasks {
            match task.await.expect("a burst task") {
                Outcome::Registered {
                    external_id,
                    contact,
                } => {
                    answered += 1;
                    let id = contact["id"].as_i64().expect("an id");
                    acknowledged.insert(id, (external_id, contact, false));
                }
                Outcome::Closed {
                    external_id,
                    contact,
                } => {
                    answered += 1;
                    let id = contact["id"].as_i64().expect("an id");
                    acknowledged.insert(id, (external_id, contact, true));
                }
                Outcome::Refused { what, status, body } => {
                    panic!("round {round}: a {what} was answered {status}: {body}")
                }
                Outcome::Unknown => unknown += 1,
            }
        }
        assert!(answered >= kill_after, "round {round}: {answered} answered");
        assert!(
            unknown > 0,
            "round {round}: the burst finished before the kill, so nothing was cut short"
        );
        eprintln!("round {round}: killed after {answered} acknowledged, {unknown} cut short");

        check_file(&db, round);
        let restarted = start(dir.path(), &db, &client, round + 1).await;
        check_api(&client, &restarted.base, &acknowledged, round).await;
        // The store takes writes again after recovery.
        post(
            &client,
            format!("{}/api/contacts", restarted.base),
            json!({"external_lead_id": "after-restart", "source_code": "bot"}),
        )
        .await;
        server = Some(restarted);
    }
    let last = server.take().expect("a running server");
    // Readers beside the live writer see a sound file too.
    check_file(&db, KILL_AFTER.len());
    drop(last);
}
