//! The drain of the waiting queue, written once over [`Conn`]: which sources a drain looks
//! at, one step (take the oldest waiting contact, apply the rule, claim, assign), and the
//! loop over the steps in [`DrainOrder`]. Each backend runs the steps in its own units of
//! work ([`Steps`]): the SQLite writer's job ([`drain_here`]), or a PostgreSQL transaction
//! per step (`pg::PgStore::drain`). docs/architecture.md says why order and capacity hold.

use chrono::{DateTime, Utc};
use crm_core::{
    Candidate, ContactId, Credit, DecisionPath, DrainOrder, OperatorId, Pace, SourceId, SourceRule,
    SourceState, StoreError, Strategy, decide, next_eligible,
};
use rand::Rng;

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::{
    clock::Timer,
    conn::{Conn, returned},
    ops::append_decision,
    sql,
};

/// Which sources a drain serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every source: capacity changed in a way that may concern any (a weight or limit
    /// change, the sweep).
    All,
    /// The sources this operator has a weight for: it freed a place.
    Operator(OperatorId),
    /// One source: a contact of it was stored waiting.
    Source(SourceId),
    /// A contact of `source` was taken from operator `from` by hand and waits again: the
    /// sources `from` has a weight for, and `source`, with `from` passed over for that
    /// contact ([`crm_core::Exclusion::UnassignedFrom`]).
    Unassigned {
        /// The contact back in the queue.
        contact: ContactId,
        /// Its source.
        source: SourceId,
        /// The operator it was taken from.
        from: OperatorId,
    },
}

impl Scope {
    /// The operator whose freed place is all this drain is for, if one is. Not so for
    /// [`Self::Unassigned`]: the contact back in the queue may go to someone else after the
    /// operator it was taken from is full again.
    fn freed(self) -> Option<OperatorId> {
        match self {
            Self::Operator(id) => Some(id),
            Self::All | Self::Source(_) | Self::Unassigned { .. } => None,
        }
    }

    /// A contact and the operator to pass over for it.
    fn avoid(self) -> Option<(ContactId, OperatorId)> {
        match self {
            Self::Unassigned { contact, from, .. } => Some((contact, from)),
            Self::All | Self::Operator(_) | Self::Source(_) => None,
        }
    }
}

/// The queue's heads in `scope`: each source with its oldest waiting contact.
pub async fn queue_heads(
    conn: &impl Conn,
    scope: Scope,
) -> Result<Vec<(SourceId, Option<ContactId>)>, StoreError> {
    let rows = match scope {
        Scope::All => conn.all(sql::QUEUE_HEADS, vec![]).await?,
        Scope::Operator(id) | Scope::Unassigned { from: id, .. } => {
            conn.all(sql::QUEUE_HEADS_OF_OPERATOR, vec![id.get().into()])
                .await?
        }
        Scope::Source(id) => {
            let head = queue_head(conn, id).await?;
            return Ok(vec![(id, head)]);
        }
    };
    let mut heads = rows
        .iter()
        .map(|row| {
            Ok((
                SourceId(row.get(0)?),
                row.get::<Option<i64>>(1)?.map(ContactId),
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // The contact's source, which the operator it was taken from may have no weight for.
    if let Scope::Unassigned { source, .. } = scope
        && !heads.iter().any(|(id, _)| *id == source)
    {
        heads.push((source, queue_head(conn, source).await?));
    }
    Ok(heads)
}

/// `source`'s strategy and stickiness.
pub(crate) async fn source_rule(
    conn: &impl Conn,
    source: SourceId,
) -> Result<SourceRule, StoreError> {
    let row = returned(
        conn.one(sql::SOURCE_RULE, vec![source.get().into()])
            .await?,
    )?;
    sql::stored_rule(&row.get::<String>(0)?, row.get(1)?)
}

/// Stores the credits a smooth pick left, the rows it changed only.
pub(crate) async fn store_credit(
    conn: &impl Conn,
    source: SourceId,
    candidates: &[Candidate],
    credit: &Credit,
) -> Result<(), StoreError> {
    let mut values = Vec::new();
    for ((candidate, before), after) in candidates.iter().zip(&credit.before).zip(&credit.after) {
        if before != after {
            values.push(candidate.operator_id.get().into());
            values.push((*after).into());
        }
    }
    if values.is_empty() {
        return Ok(());
    }
    let statement = sql::set_credits(values.len() / 2);
    values.push(source.get().into());
    conn.all(&statement, values).await?;
    Ok(())
}

async fn queue_head(conn: &impl Conn, source: SourceId) -> Result<Option<ContactId>, StoreError> {
    let row = returned(conn.one(sql::QUEUE_HEAD, vec![source.get().into()]).await?)?;
    Ok(row.get::<Option<i64>>(0)?.map(ContactId))
}

/// What one step of a drain did to a source's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing waits (that this unit of work may take).
    Empty,
    /// Nobody is eligible for the oldest waiting contact; nothing was written. `wake`: when
    /// the first of its rate-limited operators is eligible again, if one is.
    Blocked {
        /// When a drain is owed ([`crm_core::next_eligible`]).
        wake: Option<DateTime<Utc>>,
    },
    /// The chosen operator filled up meanwhile (another replica); nothing was written.
    Lost,
    /// The oldest waiting contact went to `operator`; `head` waits next.
    Assigned {
        /// The contact served.
        contact: ContactId,
        /// Its operator now.
        operator: OperatorId,
        /// Whether the operator has room for more, as far as this step saw.
        room_left: bool,
        /// Its pace bucket after this assignment, when it is paced.
        pace: Option<Pace>,
        /// The source's oldest waiting contact now.
        head: Option<ContactId>,
    },
}

/// One step of a drain, a unit of work of its own on PostgreSQL: takes the source's oldest
/// waiting contact (on PostgreSQL locking it and passing over those another drain holds),
/// applies the rule to the source's operators as a registration does, claims the chosen
/// operator's place and gives it the contact.
///
/// `avoid` names a contact and an operator to pass over for it (see [`Scope::Unassigned`]);
/// `now` is when the step runs, for the operators' paces and the history.
pub async fn drain_step<C: Conn>(
    conn: &C,
    source: SourceId,
    avoid: Option<(ContactId, OperatorId)>,
    now: DateTime<Utc>,
    rng: &mut (impl Rng + ?Sized),
) -> Result<Step, StoreError> {
    let Some(row) = conn
        .one(C::LOCKS.waiting, vec![source.get().into()])
        .await?
    else {
        return Ok(Step::Empty);
    };
    let contact = ContactId(row.get(0)?);
    let lead: i64 = row.get(1)?;
    let rule = source_rule(conn, source).await?;
    if rule.strategy == Strategy::SmoothWeighted {
        // One smooth pick at a time per source (registrations take the same lock on
        // PostgreSQL); the credits are read after it.
        conn.one(C::LOCKS.source, vec![source.get().into()]).await?;
    }
    let rows = conn.all(sql::CANDIDATES, vec![source.get().into()]).await?;
    let mut candidates = Vec::with_capacity(rows.len());
    let mut paces = Vec::with_capacity(rows.len());
    let mut credit = Vec::new();
    for row in &rows {
        let (candidate, pace) =
            sql::candidate_from_row(|i| row.get(i), |i| row.get(i), |i| row.get(i), now)?;
        candidates.push(candidate);
        paces.push(pace);
        if rule.strategy == Strategy::SmoothWeighted {
            credit.push(row.get(8)?);
        }
    }
    let owner = if rule.sticky_owner {
        let row = conn
            .one(sql::LATEST_OWNER, vec![lead.into(), source.get().into()])
            .await?;
        row.map(|row| row.get::<i64>(0))
            .transpose()?
            .map(OperatorId)
    } else {
        None
    };
    let avoid = avoid
        .filter(|(avoided, _)| *avoided == contact)
        .map(|(_, operator)| operator);
    let state = SourceState {
        rule,
        owner,
        credit: &credit,
    };
    let decision = decide(&candidates, &state, avoid, rng);
    let Some(operator) = decision.chosen else {
        return Ok(Step::Blocked {
            wake: next_eligible(paces.into_iter().flatten(), now),
        });
    };
    let chosen = candidates
        .iter()
        .position(|c| c.operator_id == operator)
        .ok_or_else(|| StoreError::Internal("the rule chose no candidate".into()))?;
    let room_left = candidates[chosen].open_contacts + 1 < candidates[chosen].max_active_contacts;
    let pace = paces[chosen].map(|pace| pace.debited(now));
    if claim(conn, operator, paces[chosen], now).await?.is_none() {
        return Ok(Step::Lost);
    }
    returned(
        conn.one(
            sql::ASSIGN_WAITING,
            vec![operator.get().into(), contact.get().into()],
        )
        .await?,
    )?;
    if let Some(moved) = &decision.credit {
        store_credit(conn, source, &candidates, moved).await?;
    }
    let entry = (DecisionPath::Drained, Some(operator), Some(&decision));
    append_decision(conn, contact, source, entry, now).await?;
    Ok(Step::Assigned {
        contact,
        operator,
        room_left,
        pace,
        head: queue_head(conn, source).await?,
    })
}

/// Claims `operator`'s place for an automatic assignment at `now`: the counter, and the
/// bucket too when it is paced (`pace` as the rule judged it). `None`: lost (full, switched
/// off, paced out, or its pace changed since it was read).
pub(crate) async fn claim(
    conn: &impl Conn,
    operator: OperatorId,
    pace: Option<Pace>,
    now: DateTime<Utc>,
) -> Result<Option<crate::conn::Row>, StoreError> {
    Ok(match pace {
        None => {
            conn.one(sql::CLAIM_UNPACED, vec![operator.get().into()])
                .await?
        }
        Some(pace) => {
            conn.one(sql::CLAIM_PACED, paced_claim(operator, pace, now))
                .await?
        }
    })
}

/// The values of [`sql::CLAIM_PACED`].
fn paced_claim(
    operator: OperatorId,
    pace: Pace,
    now: DateTime<Utc>,
) -> Vec<sea_orm::sea_query::Value> {
    let rate = pace.per_minute;
    vec![
        now.timestamp_micros().into(),
        rate.interval_us().into(),
        operator.get().into(),
        i64::from(rate.get()).into(),
        rate.tolerance_us().into(),
    ]
}

/// One contact a drain assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The contact.
    pub contact: ContactId,
    /// Its operator now.
    pub operator: OperatorId,
    /// Its source.
    pub source: SourceId,
    /// The operator's pace bucket after the assignment, when it is paced.
    pub pace: Option<Pace>,
    /// From the moment the drain was asked for (right after the commit that freed capacity,
    /// or the sweep's start) until its step had written the assignment.
    pub latency: Duration,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// The contacts assigned, in the order served.
    pub assigned: Vec<Assignment>,
    /// When a drain is owed because a rate-limited operator's bucket refills, if one is.
    pub wake: Option<DateTime<Utc>>,
    /// Sources left with contacts waiting (nobody eligible) and sources emptied, as far as
    /// the drain saw them.
    pub waiting: Vec<(SourceId, bool)>,
}

/// How many lost claims one drain tolerates before it leaves the rest to the next one.
const MAX_LOST_CLAIMS: u32 = 16;

/// Runs one [`drain_step`] in a unit of work: the SQLite writer's job, or a PostgreSQL
/// transaction of its own per step.
pub trait Steps {
    /// One step on `source`'s queue, passing over `avoid`'s operator for its contact.
    fn step(
        &mut self,
        source: SourceId,
        avoid: Option<(ContactId, OperatorId)>,
    ) -> impl Future<Output = Result<Step, StoreError>>;
}

/// Drains the queue from `heads` (those of `scope`), oldest waiting contact first among the
/// sources not blocked ([`DrainOrder`]), one [`Steps::step`] at a time, until nobody eligible
/// remains or nothing waits.
///
/// A drain for one operator's freed place ([`Scope::Operator`]) ends as soon as that operator
/// is full again: before the write that freed it, no waiting contact of its sources had an
/// eligible operator (every earlier write drained), so it was the only one that could take
/// any, and probing its other sources would find them blocked. On PostgreSQL another replica
/// may have freed capacity meanwhile: its own drain, or the sweep, serves that.
pub async fn drain(
    scope: Scope,
    heads: Vec<(SourceId, Option<ContactId>)>,
    asked: Instant,
    steps: &mut impl Steps,
) -> Result<Drained, StoreError> {
    let mut order = DrainOrder::new(heads.iter().copied());
    let mut drained = Drained {
        waiting: heads
            .iter()
            .filter(|(_, head)| head.is_none())
            .map(|(source, _)| (*source, false))
            .collect(),
        ..Drained::default()
    };
    let mut lost = 0;
    while let Some((source, _)) = order.next() {
        match steps.step(source, scope.avoid()).await? {
            Step::Empty => {
                order.advance(source, None);
                drained.waiting.push((source, false));
            }
            Step::Blocked { wake } => {
                order.block(source);
                drained.waiting.push((source, true));
                drained.wake = drained.wake.into_iter().chain(wake).min();
            }
            Step::Lost if lost < MAX_LOST_CLAIMS => lost += 1,
            Step::Lost => break,
            Step::Assigned {
                contact,
                operator,
                room_left,
                pace,
                head,
            } => {
                drained.assigned.push(Assignment {
                    contact,
                    operator,
                    source,
                    pace,
                    latency: asked.elapsed(),
                });
                order.advance(source, head);
                if head.is_none() {
                    drained.waiting.push((source, false));
                }
                if scope.freed() == Some(operator) && !room_left {
                    break;
                }
            }
        }
    }
    Ok(drained)
}

/// Every step on one connection, inside the current unit of work (the SQLite writer's job).
struct Here<'c, C, R: ?Sized> {
    conn: &'c C,
    now: DateTime<Utc>,
    rng: &'c mut R,
}

impl<C: Conn, R: Rng + ?Sized> Steps for Here<'_, C, R> {
    fn step(
        &mut self,
        source: SourceId,
        avoid: Option<(ContactId, OperatorId)>,
    ) -> impl Future<Output = Result<Step, StoreError>> {
        drain_step(self.conn, source, avoid, self.now, self.rng)
    }
}

/// Drains `scope` inside the current unit of work (the SQLite writer's job, alone), at `now`.
pub async fn drain_here<C: Conn>(
    conn: &C,
    scope: Scope,
    now: DateTime<Utc>,
    rng: &mut (impl Rng + ?Sized),
) -> Result<Drained, StoreError> {
    let asked = Instant::now();
    let heads = queue_heads(conn, scope).await?;
    drain(scope, heads, asked, &mut Here { conn, now, rng }).await
}

/// The most drain latencies kept between two reads ([`DrainLog::take_latencies`]): a server
/// nobody scrapes keeps at most this many.
const MAX_LATENCIES: usize = 100_000;

/// What drains leave behind them for the server: the drain owed to a refilling bucket
/// ([`Timer`]) and the latency of each assignment, until `/metrics` takes them.
#[derive(Debug, Default)]
pub struct DrainLog {
    /// The drain owed to a refilling pace bucket.
    pub timer: Timer,
    latencies: Mutex<Vec<Duration>>,
}

impl DrainLog {
    /// Notes the moment a drain of `scope` owes (a drain of every source replaces what was
    /// owed): at once, where the drain ran, so a registration's later wake-up is never
    /// overwritten by it.
    pub fn owe(&self, scope: Scope, wake: Option<DateTime<Utc>>) {
        if scope == Scope::All {
            self.timer.reset(wake);
        } else {
            self.timer.arm(wake);
        }
    }

    /// Notes a drain's latencies, each lengthened by `later` (the time from the drain's end
    /// to the commit that made it durable, when they are noted after it).
    pub fn latencies(&self, drained: &Drained, later: Duration) {
        let mut kept = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let room = MAX_LATENCIES.saturating_sub(kept.len());
        kept.extend(
            drained
                .assigned
                .iter()
                .map(|a| a.latency + later)
                .take(room),
        );
    }

    /// The latencies noted since the last call.
    pub fn take_latencies(&self) -> Vec<Duration> {
        std::mem::take(
            &mut *self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}
