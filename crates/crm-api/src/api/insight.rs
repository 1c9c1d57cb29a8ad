//! `/api/sources/{id}/distribution` and `/api/sources/{id}/simulate`: is the split fair,
//! and what would a weight change do. The arithmetic is crm-core's
//! (`source_distribution`, `simulate`); docs/reading-the-distribution.md reads an answer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_core::{SimulationRequest, SourceId, Store, Window};
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use rand::RngExt;

use super::{
    ApiTags,
    path_id::PathId,
    sources::{WeightInput, weight_entries, weight_set},
};
use crate::{
    auth::Credentials,
    body::{Body, Check, Field, PicksRule, SeedRule, wire_object},
    dto::{Nullable, Strategy},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, PATH, QUERY},
    },
};

/// Report endpoints over a store, one report at a time ([`InsightApi::new`]).
pub(crate) struct InsightApi<S> {
    store: Arc<S>,
    /// A report streams a window of the history through one read connection for as long
    /// as it takes (seconds at a million decisions, docs/benchmarks.md): one at a time, so
    /// a page that several supervisors keep open cannot take the whole read pool from the
    /// reads a registration needs (a source key's lookup); the others wait their turn.
    one_at_a_time: tokio::sync::Semaphore,
}

impl<S> InsightApi<S> {
    pub(crate) fn new(store: Arc<S>) -> Self {
        Self {
            store,
            one_at_a_time: tokio::sync::Semaphore::new(1),
        }
    }

    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        // Never closed, so this cannot fail; answered as a 503 if it ever did.
        self.one_at_a_time.acquire().await.map_err(|_| {
            ApiError::from(crm_core::StoreError::Unavailable("reports stopped".into()))
        })
    }
}

#[OpenApi(tag = "ApiTags::Sources")]
impl<S: Store> InsightApi<S> {
    /// Realised against expected shares of the source's automatic assignments
    ///
    /// For each operator with a weight on the source now: what chance alone would have
    /// given it over the window's weighted draws, knowing who was actually eligible at each
    /// (`expected`), what it got (`assigned`), how unusual the difference is (`z`, flagged
    /// beyond ±3), and how often it was passed over as full, switched off or paced out.
    /// docs/reading-the-distribution.md works through an example.
    #[oai(
        path = "/api/sources/:id/distribution",
        method = "get",
        operation_id = "get_source_distribution"
    )]
    async fn distribution(
        &self,
        id: Path<PathId>,
        /// Start of the window (RFC 3339); default: 24 hours before `until`.
        since: Query<Option<DateTime<Utc>>>,
        /// End of the window, excluded (RFC 3339); default: now. At most 7 days after
        /// `since`.
        until: Query<Option<DateTime<Utc>>>,
        _auth: Credentials,
    ) -> ApiResult<Json<SourceDistribution>, { API | PATH | QUERY }> {
        let window = Window::new(since.0, until.0, self.store.now())
            .map_err(|err| ApiError::invalid("since", err.to_string()))?;
        let source_id = SourceId(id.get());
        let _turn = self.turn().await?;
        let report = crm_core::source_distribution(&*self.store, source_id, window).await?;
        let per = |n: u64| ratio(n, report.decisions);
        Ok(Json(SourceDistribution {
            source_id: source_id.get(),
            since: window.since,
            until: window.until,
            decisions: report.decisions,
            draws: report.draws,
            operators: report
                .shares
                .iter()
                .map(|s| OperatorShare {
                    operator_id: s.operator_id.get(),
                    weight: s.weight,
                    configured_share: s.configured_share,
                    expected: s.expected,
                    assigned: s.assigned,
                    z: s.z,
                    flag: s.flag,
                    manual: s.manual,
                    sticky: s.sticky,
                    smooth: s.smooth,
                    sticky_missed: s.sticky_missed,
                    at_capacity_share: per(s.at_capacity),
                    inactive_share: per(s.inactive),
                    rate_limited_share: per(s.rate_limited),
                })
                .collect(),
        }))
    }

    /// Dry run of replacing the source's weights
    ///
    /// Writes nothing. Draws `picks` times with the proposed weights against today's loads,
    /// limits and paces (operators at capacity stay excluded, as they would be), and drains
    /// the source's real queue on paper. The same body with the same `seed` gives the same
    /// answer while nothing changes in between (the realised shares cover the last 24 hours
    /// and paces refill, so time is a change too); without a seed a fresh one is drawn and
    /// returned. A `smooth_weighted` source is predicted exactly, from the state the change
    /// would leave, and its seed plays no part. A sticky source's returning leads are not
    /// modelled: the prediction is of new leads.
    #[oai(
        path = "/api/sources/:id/simulate",
        method = "post",
        operation_id = "simulate_source_weights"
    )]
    async fn simulate(
        &self,
        id: Path<PathId>,
        body: Body<SimulateWeights>,
        _auth: Credentials,
    ) -> ApiResult<Json<Simulation>, { API | PATH | BODY }> {
        let request = SimulationRequest::try_from(body.0)?;
        let _turn = self.turn().await?;
        let run = crm_core::simulate(&*self.store, SourceId(id.get()), &request).await?;
        Ok(Json(Simulation {
            strategy: run.strategy.into(),
            seed: run.seed,
            picks: run.picks,
            waiting: run.waiting,
            would_assign: run.would_assign,
            still_waiting: run.still_waiting,
            operators: run
                .operators
                .into_iter()
                .map(|o| SimulatedOperator {
                    operator_id: o.operator_id.get(),
                    weight: o.weight,
                    current_weight: o.current_weight,
                    configured_share: o.configured_share,
                    current_configured_share: o.current_configured_share,
                    realised_share: o.realised_share,
                    predicted: o.predicted,
                    predicted_share: o.predicted_share,
                    excluded: o.excluded.map(Excluded::from).into(),
                    would_take: o.would_take,
                })
                .collect(),
        }))
    }
}

fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// A proposed set of weights, as `PUT /api/sources/{id}/operators` takes it, and how to
/// draw.
#[derive(Debug, Object)]
struct SimulateWeights {
    /// The source's proposed operators and weights; each operator at most once.
    operators: Field<Vec<Field<WeightInput>>>,
    /// The generator's seed; a fresh one (returned) when left out.
    seed: Field<i64, SeedRule>,
    /// How many draws the prediction makes.
    picks: Field<i64, PicksRule>,
}

wire_object!(SimulateWeights);

impl TryFrom<SimulateWeights> for SimulationRequest {
    type Error = ApiError;

    fn try_from(body: SimulateWeights) -> Result<Self, ApiError> {
        let mut check = Check::default();
        let entries = weight_entries(&mut check, body.operators);
        let seed = check.optional("seed", body.seed, SimulationRequest::seed);
        let picks = check.optional("picks", body.picks, SimulationRequest::picks);
        let entries = check.finish(|| entries)?;
        Ok(Self {
            weights: weight_set(entries)?,
            seed: seed.unwrap_or_else(|| rand::rng().random_range(0..=SimulationRequest::MAX_SEED)),
            picks: picks.unwrap_or(SimulationRequest::DEFAULT_PICKS),
        })
    }
}

/// A source's realised against expected shares over a window.
#[derive(Debug, Object)]
struct SourceDistribution {
    source_id: i64,
    /// Start of the window.
    since: DateTime<Utc>,
    /// End of the window (excluded).
    until: DateTime<Utc>,
    /// The source's automatic decisions in the window (registered, queued, drained): what
    /// the `*_share` fields divide by.
    decisions: u64,
    /// Of those, weighted draws: what `expected`, `assigned` and `z` count.
    draws: u64,
    /// One per operator with a weight on the source now, by operator id.
    operators: Vec<OperatorShare>,
}

/// One operator's share of a source's weighted draws.
#[derive(Debug, Object)]
struct OperatorShare {
    operator_id: i64,
    /// Its weight on the source now.
    weight: i64,
    /// `weight` over the sum of the source's weights now.
    configured_share: f64,
    /// What chance alone would have given it: over the window's draws, the sum of its
    /// weight over the eligible operators' weights at each draw where it was eligible.
    expected: f64,
    /// How many of the window's draws chose it (reconciles with the contacts' histories).
    assigned: u64,
    /// `(assigned − expected) / sqrt(Σ p(1 − p))`: how many standard deviations the count
    /// is from what chance gives; `null` when it was never one of several eligible.
    #[oai(nullable)]
    z: Option<f64>,
    /// `|z| > 3`: chance alone does that about 3 times in 1,000.
    flag: bool,
    /// Contacts of the window assigned to it by hand (beside the draws, not in them).
    manual: u64,
    /// Contacts of the window that went to it as the lead's owner (a `sticky_owner`
    /// source; beside the draws).
    sticky: u64,
    /// Contacts of the window it received by the smooth rule (a `smooth_weighted`
    /// source: not draws, so never flagged for not being random).
    smooth: u64,
    /// Returning leads of the window whose owner it was that went to someone else because
    /// it could not take them (full, switched off, paced out); `sticky / (sticky +
    /// sticky_missed)` is its sticky hit rate.
    sticky_missed: u64,
    /// Fraction of the window's decisions that passed it over as at capacity.
    at_capacity_share: f64,
    /// Fraction of the window's decisions that passed it over as inactive.
    inactive_share: f64,
    /// Fraction of the window's decisions that passed it over as paced out.
    rate_limited_share: f64,
}

/// What a replacement of the weights would do now.
#[derive(Debug, Object)]
struct Simulation {
    // The source's strategy, which the prediction follows: for `smooth_weighted` it is
    // exact (the picks from the state the change would leave: the credits as they are
    // when the weights stay the same, reset otherwise). No doc comment: see `dto::Source`.
    strategy: Strategy,
    /// The seed used: send it back to get the same answer.
    seed: u64,
    /// Draws made for `predicted`.
    picks: u32,
    /// Every operator of the proposed or the current weights, by operator id.
    operators: Vec<SimulatedOperator>,
    /// Contacts of the source waiting now.
    waiting: u64,
    /// Of those, how many a drain with the proposed weights would assign at once.
    would_assign: u64,
    /// And how many would still wait.
    still_waiting: u64,
}

/// One operator in a dry run.
#[derive(Debug, Object)]
struct SimulatedOperator {
    operator_id: i64,
    /// Its proposed weight; 0 when the proposal leaves it out.
    weight: i64,
    /// Its weight now; 0 when it has none.
    current_weight: i64,
    /// Proposed `weight` over the proposed sum.
    configured_share: f64,
    /// `current_weight` over the sum now.
    current_configured_share: f64,
    /// Its share of the source's automatic assignments (drawn at registration or from the
    /// queue) in the last 24 hours; `null` when there were none.
    #[oai(nullable)]
    realised_share: Option<f64>,
    /// How many of the `picks` draws it received.
    predicted: u64,
    /// `predicted / picks`.
    predicted_share: f64,
    /// Why the rule passes it over now; `null` when it is eligible.
    excluded: Nullable<Excluded>,
    /// How many waiting contacts a drain would give it now.
    would_take: u64,
}

/// Why the rule passes an operator over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
enum Excluded {
    /// Switched off.
    Inactive,
    /// Its open contacts reached its limit.
    AtCapacity,
    /// Its `max_assignments_per_minute` admits none now.
    RateLimited,
    /// Weight zero (never stored; kept for completeness).
    ZeroWeight,
    /// Just unassigned from the contact (drains only).
    UnassignedFrom,
}

impl From<crm_core::Exclusion> for Excluded {
    fn from(e: crm_core::Exclusion) -> Self {
        match e {
            crm_core::Exclusion::Inactive => Self::Inactive,
            crm_core::Exclusion::AtCapacity => Self::AtCapacity,
            crm_core::Exclusion::RateLimited => Self::RateLimited,
            crm_core::Exclusion::ZeroWeight => Self::ZeroWeight,
            crm_core::Exclusion::UnassignedFrom => Self::UnassignedFrom,
        }
    }
}
