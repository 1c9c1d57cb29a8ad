//! What a supervisor asks of the history: is the split fair ([`source_distribution`]), and
//! what would a weight change do ([`simulate`]). Both are written once against the
//! [`Store`] port; the arithmetic is [`crate::Fairness`] and [`crate::predict`].

use chrono::{DateTime, TimeDelta, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{
    Decision, DecisionPath, Distribution, Exclusion, Fairness, OperatorId, SourceId, Store,
    StoreError, Strategy, ValueError, WeightSet, distribution::capped, exclusion, predict,
    predict_smooth, preview_drain, preview_drain_smooth,
};

/// A span of time for a report: `[since, until)`, at most [`Window::MAX`] long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant in the window.
    pub since: DateTime<Utc>,
    /// First instant after it.
    pub until: DateTime<Utc>,
}

/// Why a window was refused (the API reports it on `since`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `since` is not before `until`.
    #[error("must be before `until`")]
    Empty,
    /// The window is longer than [`Window::MAX`].
    #[error("the window is at most 7 days long")]
    TooLong,
}

impl Window {
    /// The longest window: 7 days.
    pub const MAX: TimeDelta = TimeDelta::days(7);
    /// The window when none is given: the 24 hours before `until`.
    pub const DEFAULT: TimeDelta = TimeDelta::hours(24);

    /// `[since, until)`, where `until` defaults to `now` and `since` to [`Window::DEFAULT`]
    /// before `until`.
    ///
    /// # Errors
    /// [`WindowError`] when `since` is not before `until` or the window is too long.
    pub fn new(
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, WindowError> {
        let until = until.unwrap_or(now);
        let since = since.unwrap_or(until - Self::DEFAULT);
        if since >= until {
            Err(WindowError::Empty)
        } else if until - since > Self::MAX {
            Err(WindowError::TooLong)
        } else {
            Ok(Self { since, until })
        }
    }

    /// The [`Window::DEFAULT`] hours up to `now`.
    #[must_use]
    pub fn last_day(now: DateTime<Utc>) -> Self {
        Self {
            since: now - Self::DEFAULT,
            until: now,
        }
    }
}

/// One entry of a source's history in a window, as [`Store::source_decisions`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDecision {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub path: DecisionPath,
    /// The operator it went to, if any.
    pub operator_id: Option<OperatorId>,
    /// The rule's record, for automatic paths.
    pub record: Option<String>,
}

/// Realised against expected shares of a source's automatic decisions in `window`, for
/// the operators of its weights now, with the assignments by hand beside them. The window
/// is streamed through [`Fairness`], never held whole.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown source; driver failures.
pub async fn source_distribution<S: Store>(
    store: &S,
    source_id: SourceId,
    window: Window,
) -> Result<Distribution, StoreError> {
    let source = store.get_source(source_id).await?;
    let weights: Vec<(OperatorId, i64)> = source
        .operators
        .iter()
        .map(|o| (o.operator.id, o.weight.get()))
        .collect();
    let mut fairness = Fairness::new(&weights);
    let mut fold = |entry: SourceDecision| match entry.path {
        DecisionPath::Registered | DecisionPath::Queued | DecisionPath::Drained => {
            // Records older than version 2 (before the history) are not read.
            if let Some(decision) = entry.record.as_deref().and_then(Decision::from_record) {
                fairness.decision(&decision);
            }
        }
        DecisionPath::Manual => {
            if let Some(operator) = entry.operator_id {
                fairness.manual(operator);
            }
        }
        DecisionPath::Unassigned => {}
    };
    store.source_decisions(source_id, window, &mut fold).await?;
    Ok(fairness.finish())
}

/// A dry run of replacing a source's weights: what the rule would do with them now.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// The source's strategy, which the prediction follows: for `smooth_weighted` it is
    /// exact (the picks from the state the weights change would leave), and the seed
    /// plays no part.
    pub strategy: Strategy,
    /// The generator's seed: the same seed and weights give the same answer.
    pub seed: u64,
    /// How many draws the prediction made.
    pub picks: u32,
    /// Every operator of the proposed or the current weights, by id.
    pub operators: Vec<SimulatedOperator>,
    /// Contacts of the source waiting now.
    pub waiting: u64,
    /// Of those, how many a drain with the proposed weights would assign at once.
    pub would_assign: u64,
    /// And how many would still wait.
    pub still_waiting: u64,
}

/// One operator in a [`Simulation`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedOperator {
    /// The operator.
    pub operator_id: OperatorId,
    /// Its proposed weight (0: not in the proposal).
    pub weight: i64,
    /// Its weight now (0: none).
    pub current_weight: i64,
    /// Proposed weight over the proposed sum.
    pub configured_share: f64,
    /// Weight now over the sum now.
    pub current_configured_share: f64,
    /// Its share of the source's automatic assignments (drawn at registration or from the
    /// queue) in the last 24 hours; `None` when there were none.
    pub realised_share: Option<f64>,
    /// How many of the `picks` draws it received.
    pub predicted: u64,
    /// `predicted / picks`.
    pub predicted_share: f64,
    /// Why the rule passes it over now, if it does.
    pub excluded: Option<Exclusion>,
    /// How many waiting contacts a drain would give it now.
    pub would_take: u64,
}

/// What [`simulate`] is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulationRequest {
    /// The proposed weights, as a `PUT /api/sources/{id}/operators` would set them.
    pub weights: WeightSet,
    /// The generator's seed.
    pub seed: u64,
    /// How many draws to make ([`SimulationRequest::MAX_PICKS`] at most).
    pub picks: u32,
}

impl SimulationRequest {
    /// Draws when none are asked for.
    pub const DEFAULT_PICKS: u32 = 10_000;
    /// Most draws one dry run makes.
    pub const MAX_PICKS: u32 = 1_000_000;
    /// Largest seed: 2⁵³ − 1, the largest integer every JSON reader (JavaScript's
    /// numbers among them) keeps exactly.
    pub const MAX_SEED: u64 = (1 << 53) - 1;

    /// Checks a number of draws: 1..=[`SimulationRequest::MAX_PICKS`].
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] outside it.
    pub fn picks(value: i64) -> Result<u32, ValueError> {
        u32::try_from(value)
            .ok()
            .filter(|n| (1..=Self::MAX_PICKS).contains(n))
            .ok_or(ValueError::OutOfRange {
                min: 1,
                max: i64::from(Self::MAX_PICKS),
            })
    }

    /// Checks a seed: 0..=[`SimulationRequest::MAX_SEED`].
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] outside it.
    pub fn seed(value: i64) -> Result<u64, ValueError> {
        u64::try_from(value)
            .ok()
            .filter(|n| *n <= Self::MAX_SEED)
            .ok_or(ValueError::OutOfRange {
                min: 0,
                max: Self::MAX_SEED as i64,
            })
    }
}

/// Replacing the source's weights with `request.weights`, dry: the predicted shares over
/// `picks` draws against today's loads, limits and paces (nobody's load moves between the
/// draws), beside the configured and the realised shares, and what a drain of the source's
/// queue would do at once. Writes nothing; the same request gives the same answer while
/// the store does not change and time does not move it (the realised shares' 24 hours and
/// the paces are judged at [`Store::now`]).
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown source, [`StoreError::UnknownOperator`] for an
/// unknown operator in the weights; driver failures.
pub async fn simulate<S: Store>(
    store: &S,
    source_id: SourceId,
    request: &SimulationRequest,
) -> Result<Simulation, StoreError> {
    let source = store.get_source(source_id).await?;
    let current: Vec<(OperatorId, i64)> = source
        .operators
        .iter()
        .map(|o| (o.operator.id, o.weight.get()))
        .collect();
    let realised = store
        .source_assignments(source_id, Window::last_day(store.now()))
        .await?;
    let draws: u64 = realised.iter().map(|(_, n)| n).sum();
    let proposed: Vec<(OperatorId, i64)> = request
        .weights
        .entries()
        .iter()
        .map(|e| (e.operator_id, e.weight.get()))
        .collect();
    let smooth = source.rule.strategy == Strategy::SmoothWeighted;
    let mut proposed = proposed;
    if smooth {
        // In the order a registration lays them out, which the smooth rule's ties follow.
        proposed.sort_unstable_by_key(|(id, _)| *id);
    }
    let candidates = store.candidates(&proposed).await?;
    // The state the weights change would leave: the credits as they are when the weights
    // stay the same, all 0 after a real change.
    let credit: Vec<i64> = if request.weights.is_same_as(&current) {
        proposed
            .iter()
            .map(|(id, _)| {
                source
                    .operators
                    .iter()
                    .find(|o| o.operator.id == *id)
                    .map_or(0, |o| o.credit)
            })
            .collect()
    } else {
        vec![0; proposed.len()]
    };
    let waiting = store
        .queue(None)
        .await?
        .into_iter()
        .find(|q| q.source_id == source_id)
        .map_or(0, |q| u64::try_from(q.waiting).unwrap_or(0));
    let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
    let (predicted, drain) = if smooth {
        (
            predict_smooth(&candidates, &credit, request.picks),
            preview_drain_smooth(&candidates, &credit, waiting),
        )
    } else {
        (
            predict(&candidates, request.picks, &mut rng),
            preview_drain(&candidates, waiting, &mut rng),
        )
    };
    let proposed_sum: u64 = proposed.iter().map(|(_, w)| capped(*w)).sum();
    let current_sum: u64 = current.iter().map(|(_, w)| capped(*w)).sum();
    let share = |w: i64, sum: u64| {
        if sum == 0 {
            0.0
        } else {
            capped(w) as f64 / sum as f64
        }
    };
    let mut ids: Vec<OperatorId> = proposed
        .iter()
        .map(|(id, _)| *id)
        .chain(current.iter().map(|(id, _)| *id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let operators = ids
        .into_iter()
        .map(|id| {
            let at = proposed.iter().position(|(p, _)| *p == id);
            let weight = at.map_or(0, |i| proposed[i].1);
            let current_weight = current.iter().find(|(c, _)| *c == id).map_or(0, |c| c.1);
            let assigned = realised.iter().find(|(r, _)| *r == id).map_or(0, |r| r.1);
            let predicted = at.map_or(0, |i| predicted[i].1);
            SimulatedOperator {
                operator_id: id,
                weight,
                current_weight,
                configured_share: share(weight, proposed_sum),
                current_configured_share: share(current_weight, current_sum),
                realised_share: (draws > 0).then(|| assigned as f64 / draws as f64),
                predicted,
                predicted_share: if request.picks == 0 {
                    0.0
                } else {
                    predicted as f64 / f64::from(request.picks)
                },
                excluded: at.and_then(|i| exclusion(&candidates[i])),
                would_take: at.map_or(0, |i| drain.taken[i].1),
            }
        })
        .collect();
    Ok(Simulation {
        strategy: source.rule.strategy,
        seed: request.seed,
        picks: request.picks,
        operators,
        waiting,
        would_assign: waiting - drain.still_waiting,
        still_waiting: drain.still_waiting,
    })
}
