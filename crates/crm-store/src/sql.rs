//! The write statements, written once for both backends: `RETURNING` (SQLite 3.35+,
//! PostgreSQL) and `$n` placeholders, numbered in the order they first appear. SQLite reads
//! `$n` as a named parameter and numbers it by its first appearance, so in that order both
//! backends bind the same values by the same numbers, with no rewriting (checked below).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use crm_core::{
    AssignmentsPerMinute, Candidate, OperatorId, Pace, SourceRule, StoreError, rate_limited,
};

pub const INSERT_OPERATOR: &str = "INSERT INTO operators \
     (name, is_active, max_active_contacts, max_assignments_per_minute, open_contacts, created_at) \
     VALUES ($1, $2, $3, $4, 0, $5) RETURNING id";
/// `$4` says whether to set the pace to `$5` (`NULL` removes it).
pub const UPDATE_OPERATOR: &str = "UPDATE operators SET name = COALESCE($1, name), \
     is_active = COALESCE($2, is_active), max_active_contacts = COALESCE($3, max_active_contacts), \
     max_assignments_per_minute = CASE WHEN $4 THEN $5 ELSE max_assignments_per_minute END \
     WHERE id = $6 RETURNING id, name, is_active, max_active_contacts, max_assignments_per_minute";
pub const OPERATOR_EXISTS: &str = "SELECT id FROM operators WHERE id = $1";
/// [`OPERATOR_EXISTS`] that also keeps the operator from being deleted until the end of
/// the transaction (PostgreSQL; the lock a foreign key to it takes).
pub const OPERATOR_KEPT: &str = "SELECT id FROM operators WHERE id = $1 FOR KEY SHARE";
pub const OPERATOR_LOAD: &str =
    "SELECT is_active, open_contacts, max_active_contacts FROM operators WHERE id = $1";
pub const OPERATOR_HAS_CONTACTS: &str = "SELECT id FROM contacts WHERE operator_id = $1 LIMIT 1";
pub const DELETE_OPERATOR: &str = "DELETE FROM operators WHERE id = $1 RETURNING id";

pub const INSERT_SOURCE: &str = "INSERT INTO sources (name, code, created_at, strategy, sticky_owner) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";
pub const UPDATE_SOURCE: &str = "UPDATE sources SET name = COALESCE($1, name), code = COALESCE($2, code), \
     strategy = COALESCE($3, strategy), sticky_owner = COALESCE($4, sticky_owner) \
     WHERE id = $5 RETURNING id, name, code, strategy, sticky_owner";
/// A source's rule: its strategy and stickiness.
pub const SOURCE_RULE: &str = "SELECT strategy, sticky_owner FROM sources WHERE id = $1";
/// The operator of lead `$1`'s latest contact from source `$2` that has one (the sticky
/// owner), through `ix_contacts_lead`, whose entries of one lead are in id order. The `+`
/// keeps SQLite's planner off `ix_contacts_source`, which it otherwise prefers and then
/// walks the whole source backwards (a registration at a tenth of the speed).
pub const LATEST_OWNER: &str = "SELECT operator_id FROM contacts \
     WHERE lead_id = $1 AND +source_id = $2 AND operator_id IS NOT NULL \
     ORDER BY id DESC LIMIT 1";
/// Sets the smooth credits of `n` operators of one source in one statement (a pick moves
/// every eligible operator's): parameters `$1, $2, …` are `(operator, credit)` pairs, and
/// `$2n+1` the source, whose other rows keep their credit. Numbered in the order they
/// appear, as SQLite numbers them. No `operator_id IN (…)`: SQLite builds a temporary
/// b-tree of such a list on every execution.
pub fn set_credits(n: usize) -> String {
    let mut sql = String::from("UPDATE operator_source_weights SET credit = CASE operator_id");
    for i in 0..n {
        let _ = write!(sql, " WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2);
    }
    let _ = write!(sql, " ELSE credit END WHERE source_id = ${}", 2 * n + 1);
    sql
}
/// The sources operator `$1` has a weight for.
pub const SOURCES_OF_OPERATOR: &str =
    "SELECT source_id FROM operator_source_weights WHERE operator_id = $1";
/// Every smooth credit of source `$1` back to 0.
pub const RESET_CREDITS: &str =
    "UPDATE operator_source_weights SET credit = 0 WHERE source_id = $1";
/// A source's weights (whether a replacement changes them).
pub const SOURCE_WEIGHTS: &str =
    "SELECT operator_id, weight FROM operator_source_weights WHERE source_id = $1";
pub const SOURCE_BY_ID: &str = "SELECT id FROM sources WHERE id = $1";
pub const SOURCE_HAS_CONTACTS: &str = "SELECT id FROM contacts WHERE source_id = $1 LIMIT 1";
pub const DELETE_SOURCE: &str = "DELETE FROM sources WHERE id = $1 RETURNING id";

pub const DELETE_WEIGHTS: &str =
    "DELETE FROM operator_source_weights WHERE source_id = $1 RETURNING id";
pub const INSERT_WEIGHT: &str = "INSERT INTO operator_source_weights (operator_id, source_id, weight) \
     VALUES ($1, $2, $3) RETURNING id";

/// The operators with a weight for a source, with their loads: columns in the order
/// [`candidate_from_row`] reads (the name between the candidate and its pace).
pub const CANDIDATES: &str = "SELECT o.id, w.weight, o.is_active, o.open_contacts, o.max_active_contacts, o.name, \
     o.max_assignments_per_minute, o.pace_tat_us, w.credit \
     FROM operator_source_weights w JOIN operators o ON o.id = w.operator_id \
     WHERE w.source_id = $1 ORDER BY o.id";
/// The capacity check and the counter increment in one statement: no row means the
/// operator is full (or was switched off) by now.
pub const CLAIM_OPERATOR: &str = "UPDATE operators SET open_contacts = open_contacts + 1 \
     WHERE id = $1 AND is_active AND open_contacts < max_active_contacts RETURNING id";
/// [`CLAIM_OPERATOR`] for an automatic assignment to an operator that is not paced (it
/// fails if the operator was given a pace since it was read).
pub const CLAIM_UNPACED: &str = "UPDATE operators SET open_contacts = open_contacts + 1 \
     WHERE id = $1 AND is_active AND open_contacts < max_active_contacts \
     AND max_assignments_per_minute IS NULL RETURNING id";
/// [`CLAIM_OPERATOR`] for an automatic assignment to a paced operator at `$1` (µs since the
/// epoch): `crm_core::Pace::admits` and `Pace::debited` stated in SQL, with the interval `$2`,
/// the rate `$4` and the tolerance `$5` that crm-core computes for that rate. Conditional on
/// the row, not on the instant read, so that two claims of one operator at once both succeed
/// while its bucket has room (a compare-and-set lost one of them with room to spare).
pub const CLAIM_PACED: &str = "UPDATE operators SET open_contacts = open_contacts + 1, \
     pace_tat_us = CASE WHEN pace_tat_us > $1 THEN pace_tat_us ELSE $1 END + $2 \
     WHERE id = $3 AND is_active AND open_contacts < max_active_contacts \
     AND max_assignments_per_minute = $4 AND pace_tat_us - $1 <= $5 RETURNING id";
/// Releases a place of operator `$1`; returns its name and whether it is active (what a
/// contact shows of its operator).
pub const RELEASE_OPERATOR: &str = "UPDATE operators SET open_contacts = open_contacts - 1 \
     WHERE id = $1 AND open_contacts > 0 RETURNING name, is_active";
/// Closes an open contact; returns its operator, source, lead, payload and creation time
/// (no row when it was closed already): with the operator's row from [`RELEASE_OPERATOR`],
/// the whole contact the close answers, without reading it again.
pub const CLOSE_CONTACT: &str = "UPDATE contacts SET status = 'closed', closed_at = $1 \
     WHERE id = $2 AND status = 'open' RETURNING operator_id, source_id, lead_id, payload, created_at";
/// Stores an event (`crm_core::NewEvent`) at `$2`; its `seq` is the table's default.
pub const INSERT_EVENT: &str =
    "INSERT INTO events (type, at, contact_id, data) VALUES ($1, $2, $3, $4)";
/// Reads a contact's state; on PostgreSQL the no-op update also locks the row, so the
/// contact is locked before any operator row (see `ops`).
pub const LOCK_CONTACT: &str =
    "UPDATE contacts SET status = status WHERE id = $1 RETURNING status, operator_id, source_id";
/// Locks a source row (PostgreSQL) while its weights are replaced. It touches `name`, not
/// the unique `code`, so the lock is `FOR NO KEY UPDATE` and does not block registrations,
/// whose contact insert only takes a key-share lock on the source.
pub const LOCK_SOURCE: &str = "UPDATE sources SET name = name WHERE id = $1 RETURNING id";
pub const CONTACT_STATE: &str = "SELECT status, operator_id, source_id FROM contacts WHERE id = $1";
/// Appends an entry to contact `$1`'s decision history, after its last one: the path, the
/// contact's source, the operator, the rule's record (or `NULL`) and the time. The key packs
/// `(contact_id, seq)` as `contact_id × 65536 + seq` (migration `m20261206_000006`), so the
/// last entry is found in the primary key's range of the contact; the first entry is on
/// the contact's row (migration `m20261206_000011`), so the table's start at `seq` 2. A
/// contact's range holds [`MAX_DECISIONS`] entries: past that, nothing is inserted (no row
/// returned), instead of a key in the next contact's range.
pub const APPEND_DECISION: &str = "INSERT INTO contact_decisions \
     (id, contact_id, seq, path, source_id, operator_id, record, at) \
     SELECT $1 * 65536 + COALESCE(MAX(seq), 1) + 1, $1, COALESCE(MAX(seq), 1) + 1, \
     $2, $3, $4, $5, $6 FROM contact_decisions \
     WHERE id BETWEEN $1 * 65536 AND $1 * 65536 + 65535 \
     HAVING COALESCE(MAX(seq), 1) < 65535 RETURNING id";
/// The most entries one contact's decision history holds (see [`APPEND_DECISION`]).
pub const MAX_DECISIONS: i64 = 65_535;
pub const SET_CONTACT_OPERATOR: &str =
    "UPDATE contacts SET operator_id = $1 WHERE id = $2 RETURNING id";

/// Takes an idempotency key: inserts it, or takes over an expired one (`$5` is the
/// oldest creation time still alive). No row: the key is alive and someone else's, and on
/// PostgreSQL this statement first waits for an uncommitted holder to finish.
pub const CLAIM_KEY: &str = "INSERT INTO idempotency_keys (credential, key, fingerprint, snapshot, created_at) \
     VALUES ($1, $2, $3, NULL, $4) \
     ON CONFLICT (credential, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
     snapshot = NULL, created_at = excluded.created_at \
     WHERE idempotency_keys.created_at < $5 RETURNING key";
pub const READ_KEY: &str =
    "SELECT fingerprint, snapshot FROM idempotency_keys WHERE credential = $1 AND key = $2";
pub const RECORD_KEY: &str =
    "UPDATE idempotency_keys SET snapshot = $1 WHERE credential = $2 AND key = $3 RETURNING key";
/// The key if it is alive (`$3`: the oldest creation time still alive); the SQLite
/// writer's claim, which writes nothing (see `keys::claim_key`).
pub const READ_LIVE_KEY: &str = "SELECT fingerprint, snapshot FROM idempotency_keys \
     WHERE credential = $1 AND key = $2 AND created_at >= $3";
/// The SQLite writer's record of a claimed key with its answer: inserts it, or takes
/// over the expired key `READ_LIVE_KEY` did not return.
pub const STORE_KEY: &str = "INSERT INTO idempotency_keys (credential, key, snapshot, fingerprint, created_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (credential, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
     snapshot = excluded.snapshot, created_at = excluded.created_at";
pub const EXPIRE_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING key";

pub const INSERT_SOURCE_KEY: &str = "INSERT INTO source_keys (source_id, label, prefix, hash, created_at) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";
pub const DELETE_SOURCE_KEY: &str =
    "DELETE FROM source_keys WHERE id = $1 AND source_id = $2 RETURNING id";
pub const TOUCH_SOURCE_KEY: &str =
    "UPDATE source_keys SET last_used_at = $1 WHERE id = $2 RETURNING id";

/// [`QUEUE_HEADS`] with a filter of the sources.
macro_rules! queue_heads {
    ($filter:literal) => {
        concat!(
            "SELECT s.id, (SELECT MIN(c.id) FROM contacts c \
             WHERE c.source_id = s.id AND c.operator_id IS NULL AND c.status = 'open') \
             FROM sources s",
            $filter,
            " ORDER BY s.id"
        )
    };
}

/// [`OLDEST_WAITING`] followed by `$lock`.
macro_rules! oldest_waiting {
    ($lock:literal) => {
        concat!(
            "SELECT id, lead_id FROM contacts \
             WHERE source_id = $1 AND operator_id IS NULL AND status = 'open' ORDER BY id LIMIT 1",
            $lock
        )
    };
}

/// Sources with their oldest waiting contact (`NULL` when none): the queue's heads. Each
/// head is one probe of the partial index `ix_contacts_queue` (`m20261206_000005`), whose
/// entries follow `(source_id, id)` after two constant columns.
pub const QUEUE_HEADS: &str = queue_heads!("");
/// [`QUEUE_HEADS`] of the sources operator `$1` has a weight for.
pub const QUEUE_HEADS_OF_OPERATOR: &str = queue_heads!(
    " WHERE s.id IN (SELECT w.source_id FROM operator_source_weights w WHERE w.operator_id = $1)"
);
/// The oldest waiting contact of source `$1` (`NULL` when none).
pub const QUEUE_HEAD: &str = "SELECT MIN(id) FROM contacts \
     WHERE source_id = $1 AND operator_id IS NULL AND status = 'open'";
/// The oldest waiting contact of source `$1`.
pub const OLDEST_WAITING: &str = oldest_waiting!("");
/// [`OLDEST_WAITING`] that locks it, passing over contacts other transactions hold (another
/// replica's drain): PostgreSQL.
pub const TAKE_OLDEST_WAITING: &str = oldest_waiting!(" FOR UPDATE SKIP LOCKED");
/// Gives waiting contact `$2` to operator `$1`, whose place is claimed already.
pub const ASSIGN_WAITING: &str = "UPDATE contacts SET operator_id = $1 \
     WHERE id = $2 AND operator_id IS NULL AND status = 'open' RETURNING id";

/// Claims up to `$4` due deliveries of endpoint `$3`, while it is on, until `$1` (due at
/// `$2`), counting the attempt about to be made.
macro_rules! claim_due {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_deliveries SET claimed_until = $1, attempts = attempts + 1 \
             WHERE id IN (SELECT d.id FROM webhook_deliveries d \
             JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $2 \
             AND (d.claimed_until IS NULL OR d.claimed_until < $2) AND w.enabled \
             AND d.webhook_id = $3 ORDER BY d.next_attempt_at LIMIT $4",
            $lock,
            ") RETURNING id, webhook_id, event_seq, attempts"
        )
    };
}

/// [`claim_due!`] for the lone SQLite writer.
pub const CLAIM_DUE: &str = claim_due!("");
/// [`claim_due!`] for PostgreSQL: rows another replica is claiming are passed over.
pub const CLAIM_DUE_LOCKED: &str = claim_due!(" FOR UPDATE OF d SKIP LOCKED");

/// The statements a write reads rows with before it changes them (see `Conn::LOCKS`).
#[derive(Clone, Copy)]
pub struct Locks {
    /// A source, by id.
    pub source: &'static str,
    /// An operator, by id, kept from deletion.
    pub operator: &'static str,
    /// A contact's status and operator, by id.
    pub contact: &'static str,
    /// A source's oldest waiting contact, for a drain.
    pub waiting: &'static str,
    /// Webhook deliveries that are due, claimed.
    pub due_deliveries: &'static str,
}

/// The lone SQLite writer's: plain reads.
pub const PLAIN_READS: Locks = Locks {
    source: SOURCE_BY_ID,
    operator: OPERATOR_EXISTS,
    contact: CONTACT_STATE,
    waiting: OLDEST_WAITING,
    due_deliveries: CLAIM_DUE,
};

/// PostgreSQL's: row locks, taken in the order `ops` documents.
pub const ROW_LOCKS: Locks = Locks {
    source: LOCK_SOURCE,
    operator: OPERATOR_KEPT,
    contact: LOCK_CONTACT,
    waiting: TAKE_OLDEST_WAITING,
    due_deliveries: CLAIM_DUE_LOCKED,
};

/// A source's rule as its row stores it: `strategy` and `sticky_owner`.
pub fn stored_rule(strategy: &str, sticky_owner: bool) -> Result<SourceRule, StoreError> {
    Ok(SourceRule {
        strategy: strategy
            .parse()
            .map_err(|_| StoreError::Internal("a stored strategy is unknown".into()))?,
        sticky_owner,
    })
}

/// An operator's pace as its row stores it: `max_assignments_per_minute` (none: unpaced)
/// and `pace_tat_us`.
pub fn stored_pace(rate: Option<i64>, tat_us: i64) -> Result<Option<Pace>, StoreError> {
    rate.map(|rate| {
        let per_minute = AssignmentsPerMinute::new(rate).map_err(|err| {
            StoreError::Internal(format!("stored max_assignments_per_minute {rate} {err}").into())
        })?;
        Ok(Pace { per_minute, tat_us })
    })
    .transpose()
}

/// Reads a [`CANDIDATES`] row through the backend's column getters (`at(i)` the `i`-th
/// column of the statement's candidate), judging its pace at `now`.
pub fn candidate_from_row(
    int: impl Fn(usize) -> Result<i64, StoreError>,
    flag: impl Fn(usize) -> Result<bool, StoreError>,
    maybe: impl Fn(usize) -> Result<Option<i64>, StoreError>,
    now: DateTime<Utc>,
) -> Result<(Candidate, Option<Pace>), StoreError> {
    let pace = stored_pace(maybe(6)?, int(7)?)?;
    Ok((
        Candidate {
            operator_id: OperatorId(int(0)?),
            weight: int(1)?,
            is_active: flag(2)?,
            open_contacts: int(3)?,
            max_active_contacts: int(4)?,
            rate_limited: rate_limited(pace, now),
        },
        pace,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of `sql`'s placeholders in the order they first appear.
    fn placeholders(sql: &str) -> Vec<usize> {
        let mut seen = Vec::new();
        for (_, rest) in sql.match_indices('$').map(|(i, _)| sql.split_at(i + 1)) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let n = digits.parse().expect("a `$` starts a placeholder");
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        seen
    }

    /// SQLite numbers `$n` by first appearance: only in that order does `$n` bind the
    /// n-th value there as on PostgreSQL.
    #[test]
    fn placeholders_are_numbered_in_the_order_they_appear() {
        for sql in [
            INSERT_OPERATOR,
            UPDATE_OPERATOR,
            OPERATOR_EXISTS,
            OPERATOR_KEPT,
            OPERATOR_LOAD,
            OPERATOR_HAS_CONTACTS,
            DELETE_OPERATOR,
            INSERT_SOURCE,
            UPDATE_SOURCE,
            SOURCE_RULE,
            LATEST_OWNER,
            SOURCE_WEIGHTS,
            SOURCES_OF_OPERATOR,
            RESET_CREDITS,
            &set_credits(1),
            &set_credits(3),
            SOURCE_BY_ID,
            SOURCE_HAS_CONTACTS,
            DELETE_SOURCE,
            DELETE_WEIGHTS,
            INSERT_WEIGHT,
            CANDIDATES,
            CLAIM_OPERATOR,
            CLAIM_UNPACED,
            CLAIM_PACED,
            RELEASE_OPERATOR,
            CLOSE_CONTACT,
            LOCK_CONTACT,
            LOCK_SOURCE,
            CONTACT_STATE,
            SET_CONTACT_OPERATOR,
            CLAIM_KEY,
            READ_KEY,
            RECORD_KEY,
            READ_LIVE_KEY,
            STORE_KEY,
            EXPIRE_KEYS,
            INSERT_SOURCE_KEY,
            DELETE_SOURCE_KEY,
            TOUCH_SOURCE_KEY,
            QUEUE_HEADS,
            QUEUE_HEADS_OF_OPERATOR,
            QUEUE_HEAD,
            OLDEST_WAITING,
            TAKE_OLDEST_WAITING,
            ASSIGN_WAITING,
            APPEND_DECISION,
        ] {
            let numbers = placeholders(sql);
            let expected: Vec<usize> = (1..=numbers.len()).collect();
            assert_eq!(numbers, expected, "{sql}");
        }
    }
}
