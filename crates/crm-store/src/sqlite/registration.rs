//! The registration's unit of work on the SQLite writer: the hot path, written against
//! rusqlite directly.
//!
//! It differs from the shared statements (`sql.rs`) in one way, for speed: no
//! `RETURNING`. SQLite answers `INSERT/UPDATE … RETURNING` by first collecting the
//! returned rows in a temporary b-tree, which cost ~15 % of the writer's time per
//! registration (profile in docs/benchmarks.md). The same facts come for free from the
//! connection: `changes()` after the capacity claim, `last_insert_rowid()` after an
//! insert, and an existing lead is found by its unique `external_id` before inserting.
//! That read-then-insert is race-free here because the writer is the only writer of the
//! file (see `super::writer`); PostgreSQL keeps its single upsert.
//!
//! Being the only writer also lets it keep each source's candidates (operators, weights,
//! counters) in memory, in a [`SourceCache`], instead of reading them for every
//! registration: a registration raises the cached counter of the operator it claimed, a
//! close lowers the counter of the operator it released (closes are frequent, and nothing
//! else of the cache changes with them), and every other write (assignments, operator and
//! weight changes, anything) empties the cache once it has run, as does any failed job or
//! commit, since its changes were rolled back. The cache therefore always equals the
//! database, but for smooth credits, which it holds ahead of the rows until the writer
//! writes them (see [`SourceCache`]); and the claim itself still checks the operator's row
//! (`open_contacts < max_active_contacts`), so even a wrong cache could never put an
//! operator over its limit.

use chrono::{DateTime, Utc};
use crm_core::{
    Candidate, Contact, ContactId, ContactStatus, Credit, Decision, Entity, ExternalLeadId,
    IdempotencyKey, Inserted, KeyClaim, KeyedRegistrationTx, LeadId, OperatorId, OperatorSummary,
    Pace, Payload, Prepared, RegistrationTx, SourceId, SourceRef, StoreError, Strategy,
    next_eligible, rate_limited,
};
use rusqlite::{Connection, OptionalExtension, Params, Statement};

use super::{
    outbox::Pending,
    source_cache::{Cached, SourceCache},
};
use crate::{
    conn::{SqliteConn, sqlite_err, sqlite_timestamp},
    sql,
};

const SOURCE_BY_ID: &str = "SELECT id FROM sources WHERE id = ?1";
const SOURCE_BY_CODE: &str = "SELECT id FROM sources WHERE code = ?1";
const LEAD_BY_EXTERNAL_ID: &str = "SELECT id FROM leads WHERE external_id = ?1";
const INSERT_LEAD: &str = "INSERT INTO leads (external_id, created_at) VALUES (?1, ?2)";
/// [`sql::CLAIM_UNPACED`] without `RETURNING`: one changed row means claimed.
const CLAIM_OPERATOR: &str = "UPDATE operators SET open_contacts = open_contacts + 1 \
     WHERE id = ?1 AND is_active AND open_contacts < max_active_contacts \
     AND max_assignments_per_minute IS NULL";
/// Whether source `?1` has contacts waiting (a probe of the queue's partial index).
const ANY_WAITING: &str = "SELECT EXISTS (SELECT 1 FROM contacts \
     WHERE source_id = ?1 AND operator_id IS NULL AND status = 'open')";
/// How many contacts of source `?1` wait, up to one more than `Prepared::MAX_AHEAD` (the
/// queue's partial index, one entry each): more than that is only "more", kept as a
/// lower bound (`SourceCache::counts`).
const COUNT_WAITING: &str = "SELECT count(*) FROM (SELECT 1 FROM contacts \
     WHERE source_id = ?1 AND operator_id IS NULL AND status = 'open' LIMIT 101)";

/// The contact's insert; its id is `last_insert_rowid()` (no `RETURNING`, see above).
/// With the first entry of its decision history on its row (migration
/// `m20261206_000011`): the record, and the operator chosen, also `?3`.
const INSERT_CONTACT: &str = "INSERT INTO contacts \
     (lead_id, source_id, operator_id, status, payload, created_at, decision, registered_operator_id) \
     VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?3)";

fn db(err: rusqlite::Error) -> StoreError {
    sqlite_err(err).into()
}

/// The statements every registration runs, prepared on first use and then held for the
/// writer's life. Through rusqlite's statement cache each use hashed the SQL text and
/// moved the statement out of and back into the cache's LRU list, ~6 % of the writer's
/// instructions per registration (docs/benchmarks.md).
pub struct HotStatements<'c> {
    conn: &'c Connection,
    lead_by_external_id: Option<Statement<'c>>,
    insert_lead: Option<Statement<'c>>,
    claim_operator: Option<Statement<'c>>,
    insert_contact: Option<Statement<'c>>,
    insert_event: Option<Statement<'c>>,
    latest_owner: Option<Statement<'c>>,
}

impl<'c> HotStatements<'c> {
    /// None prepared yet: the writer starts before anything proves the schema is there.
    #[must_use]
    pub fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            lead_by_external_id: None,
            insert_lead: None,
            claim_operator: None,
            insert_contact: None,
            insert_event: None,
            latest_owner: None,
        }
    }
}

/// The statement in `slot`, prepared on `conn` the first time.
fn held<'s, 'c>(
    slot: &'s mut Option<Statement<'c>>,
    conn: &'c Connection,
    sql: &str,
) -> Result<&'s mut Statement<'c>, StoreError> {
    if slot.is_none() {
        *slot = Some(conn.prepare(sql).map_err(db)?);
    }
    Ok(slot.as_mut().expect("prepared just above"))
}

/// One registration inside the writer's current transaction.
pub struct SqliteRegistration<'r, 'c> {
    conn: &'c Connection,
    hot: &'r mut HotStatements<'c>,
    cache: &'r mut SourceCache,
    /// The events the writer's transaction has inserted.
    pending: &'r Pending,
    now: DateTime<Utc>,
    /// `now` as stored.
    created_at: String,
    /// The lead found or created by `prepare`.
    lead: Option<LeadId>,
    /// When a drain is owed because the contact was stored waiting while someone was
    /// rate-limited ([`crm_core::next_eligible`]).
    pub wake: Option<DateTime<Utc>>,
}

impl<'r, 'c> SqliteRegistration<'r, 'c> {
    /// A unit of work on the writer's connection, which is inside the group's
    /// transaction, at `now`.
    pub fn new(
        hot: &'r mut HotStatements<'c>,
        cache: &'r mut SourceCache,
        pending: &'r Pending,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            conn: hot.conn,
            hot,
            cache,
            pending,
            now,
            created_at: sqlite_timestamp(now),
            lead: None,
            wake: None,
        }
    }

    fn id(&self, sql: &str, params: impl Params) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.query_row(params, |row| row.get(0)).optional())
            .map_err(db)
    }

    fn source_id(&mut self, source: &SourceRef) -> Result<Option<SourceId>, StoreError> {
        Ok(match source {
            SourceRef::Id(id) if self.cache.candidates.contains_key(id) => Some(*id),
            SourceRef::Id(id) => self.id(SOURCE_BY_ID, [id.get()])?.map(SourceId),
            SourceRef::Code(code) => match self.cache.by_code.get(code.as_str()) {
                Some(id) => Some(*id),
                None => {
                    let id = self.id(SOURCE_BY_CODE, [code.as_str()])?.map(SourceId);
                    if let Some(id) = id {
                        self.cache.by_code.insert(code.as_str().to_owned(), id);
                    }
                    id
                }
            },
        })
    }

    fn read_candidates(&self, source_id: SourceId) -> Result<Vec<Cached>, StoreError> {
        // `$1` is SQLite's parameter 1 as well (named parameters are numbered by first
        // appearance), so the shared statement serves unchanged.
        let mut statement = self.conn.prepare_cached(sql::CANDIDATES).map_err(db)?;
        let mut rows = statement.query([source_id.get()]).map_err(db)?;
        let mut candidates = Vec::new();
        while let Some(row) = rows.next().map_err(db)? {
            let (candidate, pace) = sql::candidate_from_row(
                |i| row.get(i).map_err(db),
                |i| row.get(i).map_err(db),
                |i| row.get(i).map_err(db),
                self.now,
            )?;
            candidates.push((
                candidate,
                row.get(5).map_err(db)?,
                pace,
                row.get(8).map_err(db)?,
            ));
        }
        Ok(candidates)
    }

    /// `operator` as a cached candidate of `source_id`.
    fn cached(&self, source_id: SourceId, operator: OperatorId) -> Option<&Cached> {
        self.cache
            .candidates
            .get(&source_id)?
            .iter()
            .find(|(candidate, _, _, _)| candidate.operator_id == operator)
    }

    /// Keeps the credits a smooth pick over `candidates` left in the cache, which writes
    /// them before the group commits (see [`SourceCache`]); writes them at once when the
    /// source is not cached.
    async fn store_credit(
        &mut self,
        source_id: SourceId,
        candidates: &[Candidate],
        credit: &Credit,
    ) -> Result<(), StoreError> {
        if !self.cache.moved_credits(source_id, &credit.after) {
            crate::drain::store_credit(&self.shared(), source_id, candidates, credit).await?;
        }
        Ok(())
    }

    /// The cached pace of `operator` as a candidate of `source_id`.
    fn pace(&self, source_id: SourceId, operator: OperatorId) -> Option<Pace> {
        self.cached(source_id, operator)?.2
    }
}

impl KeyedRegistrationTx for SqliteRegistration<'_, '_> {
    async fn claim_key(&mut self, key: &IdempotencyKey) -> Result<KeyClaim, StoreError> {
        crate::keys::read_live_key(&self.shared(), key, self.now).await
    }

    async fn record_key(
        &mut self,
        key: &IdempotencyKey,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        crate::keys::store_key(&self.shared(), key, contact, self.now).await
    }
}

impl RegistrationTx for SqliteRegistration<'_, '_> {
    async fn prepare(
        &mut self,
        source: &SourceRef,
        external_id: &ExternalLeadId,
    ) -> Result<Prepared, StoreError> {
        let source_id = self
            .source_id(source)?
            .ok_or(StoreError::NotFound(Entity::Source))?;
        let existing = held(
            &mut self.hot.lead_by_external_id,
            self.conn,
            LEAD_BY_EXTERNAL_ID,
        )?
        .query_row([external_id.as_str()], |row| row.get(0))
        .optional()
        .map_err(db)?;
        self.lead = Some(LeadId(match existing {
            Some(id) => id,
            None => {
                held(&mut self.hot.insert_lead, self.conn, INSERT_LEAD)?
                    .execute((external_id.as_str(), &self.created_at))
                    .map_err(db)?;
                self.conn.last_insert_rowid()
            }
        }));
        if !self.cache.candidates.contains_key(&source_id) {
            let candidates = self.read_candidates(source_id)?;
            let rule = crate::drain::source_rule(&self.shared(), source_id).await?;
            self.cache.candidates.insert(source_id, candidates);
            self.cache.rules.insert(source_id, rule);
        }
        let rule = self
            .cache
            .rules
            .get(&source_id)
            .copied()
            .unwrap_or_default();
        let now = self.now;
        let cached = &self.cache.candidates[&source_id];
        let candidates = cached
            .iter()
            .map(|(candidate, _, pace, _)| Candidate {
                rate_limited: rate_limited(*pace, now),
                ..*candidate
            })
            .collect();
        let credit = match rule.strategy {
            Strategy::SmoothWeighted => cached.iter().map(|(_, _, _, credit)| *credit).collect(),
            Strategy::WeightedRandom => Vec::new(),
        };
        // A new lead has no owner.
        let owner = match (rule.sticky_owner, existing) {
            (true, Some(lead)) => held(&mut self.hot.latest_owner, self.conn, sql::LATEST_OWNER)?
                .query_row([lead, source_id.get()], |row| row.get(0))
                .optional()
                .map_err(db)?
                .map(OperatorId),
            _ => None,
        };
        let waiting = match self.cache.waiting.get(&source_id) {
            Some(waiting) => *waiting,
            None => {
                let waiting = self.id(ANY_WAITING, [source_id.get()])? == Some(1);
                self.cache.waiting.insert(source_id, waiting);
                waiting
            }
        };
        let ahead = match (waiting, self.cache.counts.get(&source_id)) {
            (false, _) => 0,
            (true, Some(count)) => *count,
            (true, None) => {
                let count = self.id(COUNT_WAITING, [source_id.get()])?.unwrap_or(0);
                let count = count.unsigned_abs();
                self.cache.counts.insert(source_id, count);
                count
            }
        };
        Ok(Prepared {
            source_id,
            candidates,
            waiting,
            ahead,
            rule,
            owner,
            credit,
        })
    }

    async fn insert_contact(
        &mut self,
        prepared: &Prepared,
        operator: Option<OperatorId>,
        payload: &Payload,
        decision: &Decision,
    ) -> Result<Inserted, StoreError> {
        let lead_id = self
            .lead
            .ok_or_else(|| StoreError::Internal("insert before prepare".into()))?;
        if let Some(id) = operator {
            let pace = self.pace(prepared.source_id, id);
            let claimed = match pace {
                None => held(&mut self.hot.claim_operator, self.conn, CLAIM_OPERATOR)?
                    .execute([id.get()])
                    .map_err(db)?,
                Some(_) => usize::from(
                    crate::drain::claim(&self.shared(), id, pace, self.now)
                        .await?
                        .is_some(),
                ),
            };
            if claimed == 0 {
                // Cannot happen while the cache is right; read afresh next time, from rows
                // that hold the credits the cache had moved.
                self.cache.flush(self.conn)?;
                self.cache.clear();
                return Ok(Inserted::OperatorFull);
            }
            self.cache
                .claimed(id, pace.map(|pace| pace.debited(self.now)));
        } else {
            self.cache.waiting.insert(prepared.source_id, true);
            if let Some(count) = self.cache.counts.get_mut(&prepared.source_id) {
                *count += 1;
            } else if !prepared.waiting {
                self.cache.counts.insert(prepared.source_id, 1);
            }
            self.wake = next_eligible(
                self.cache
                    .candidates
                    .get(&prepared.source_id)
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, _, pace, _)| *pace),
                self.now,
            );
        }
        held(&mut self.hot.insert_contact, self.conn, INSERT_CONTACT)?
            .execute((
                lead_id.get(),
                prepared.source_id.get(),
                operator.map(OperatorId::get),
                payload.as_json(),
                &self.created_at,
                decision.record(),
            ))
            .map_err(db)?;
        let id = self.conn.last_insert_rowid();
        let event = crate::events::created(prepared.source_id, operator, decision);
        held(&mut self.hot.insert_event, self.conn, sql::INSERT_EVENT)?
            .execute((event.kind.as_str(), &self.created_at, id, &event.data))
            .map_err(db)?;
        let contact = Some(ContactId(id));
        self.pending
            .inserted(self.conn, event.kind, self.now, contact, event.data);
        if let Some(credit) = &decision.credit {
            self.store_credit(prepared.source_id, &prepared.candidates, credit)
                .await?;
        }
        Ok(Inserted::Stored(Contact {
            id: ContactId(id),
            lead_id,
            source_id: prepared.source_id,
            operator: operator.and_then(|id| self.summary(prepared.source_id, id)),
            status: ContactStatus::Open,
            payload: payload.clone(),
            created_at: self.now,
            closed_at: None,
            waiting_ahead: None,
        }))
    }
}

impl SqliteRegistration<'_, '_> {
    /// The writer's connection for the writes shared with PostgreSQL.
    const fn shared(&self) -> SqliteConn<'_> {
        SqliteConn::new(self.conn, self.pending)
    }

    /// The answer's view of a cached candidate.
    fn summary(&self, source_id: SourceId, id: OperatorId) -> Option<OperatorSummary> {
        let (candidate, name, _, _) = self.cached(source_id, id)?;
        Some(OperatorSummary {
            id,
            name: name.clone(),
            is_active: candidate.is_active,
        })
    }
}
