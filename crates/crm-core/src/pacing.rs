//! Fair pacing: an operator's optional `max_assignments_per_minute`, a token bucket of burst
//! N refilled at N per minute, applied to automatic assignments (registrations and drains).
//!
//! The bucket is kept as one instant per operator, its *theoretical arrival time* (GCRA, the
//! generic cell rate algorithm of ATM networks, equivalent to a token bucket): each
//! assignment pushes it one interval (`60 s / N`) past `max(tat, now)`, and an assignment is
//! admitted while `tat` is at most `N − 1` intervals ahead of now. A fresh operator
//! (`tat` in the past) is admitted N times at once, then once per interval. One number per
//! operator, so the claim that raises the counter can debit it in the same statement.
//!
//! Time is an input: every function takes `now`; the store passes its clock and tests a
//! fake one.

use chrono::{DateTime, Utc};

use crate::ValueError;

/// An operator's most automatic assignments per minute: 1..=60,000 (one per millisecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AssignmentsPerMinute(u32);

impl AssignmentsPerMinute {
    /// Largest accepted rate; its interval is exactly one millisecond.
    pub const MAX: u32 = 60_000;

    /// Checks the range.
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] outside 1..=60,000.
    pub fn new(value: i64) -> Result<Self, ValueError> {
        if (1..=i64::from(Self::MAX)).contains(&value) {
            Ok(Self(u32::try_from(value).map_err(|_| out_of_range())?))
        } else {
            Err(out_of_range())
        }
    }

    /// The rate as a number.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Microseconds between two assignments at the steady rate, rounded up, so that the
    /// rate is never exceeded (59,999 per minute is one per 1,001 µs, not per 1,000).
    #[must_use]
    pub const fn interval_us(self) -> i64 {
        60_000_000_u64.div_ceil(self.0 as u64) as i64
    }

    /// How far ahead of now the bucket's instant may be for one more assignment: the
    /// burst less one interval.
    #[must_use]
    pub const fn tolerance_us(self) -> i64 {
        (self.0 as i64 - 1) * self.interval_us()
    }
}

fn out_of_range() -> ValueError {
    ValueError::OutOfRange {
        min: 1,
        max: i64::from(AssignmentsPerMinute::MAX),
    }
}

/// An operator's bucket: its rate and its theoretical arrival time, in microseconds since
/// the Unix epoch (0 for an operator never paced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The rate.
    pub per_minute: AssignmentsPerMinute,
    /// The bucket's instant (see the module docs).
    pub tat_us: i64,
}

impl Pace {
    /// Whether the bucket admits one more assignment at `now`.
    #[must_use]
    pub fn admits(self, now: DateTime<Utc>) -> bool {
        self.tat_us.saturating_sub(now.timestamp_micros()) <= self.per_minute.tolerance_us()
    }

    /// The first instant (in microseconds since the epoch) at which it admits one more.
    #[must_use]
    pub const fn eligible_at_us(self) -> i64 {
        self.tat_us.saturating_sub(self.per_minute.tolerance_us())
    }

    /// The bucket after one assignment at `now` (whether or not it [`Pace::admits`] it: the
    /// caller checks first).
    #[must_use]
    pub fn debited(self, now: DateTime<Utc>) -> Self {
        Self {
            tat_us: self
                .tat_us
                .max(now.timestamp_micros())
                .saturating_add(self.per_minute.interval_us()),
            ..self
        }
    }
}

/// Whether an operator with `pace` (`None`: unpaced) is out of automatic assignments at
/// `now`: a candidate's `rate_limited`.
#[must_use]
pub fn rate_limited(pace: Option<Pace>, now: DateTime<Utc>) -> bool {
    pace.is_some_and(|pace| !pace.admits(now))
}

/// The earliest instant at which one of `paces` that does not admit an assignment at `now`
/// will: when a drain should run again for them, so that the queue is served as soon as a
/// bucket refills rather than at the next sweep. `None` when every one admits now (or
/// there is none).
#[must_use]
pub fn next_eligible(
    paces: impl IntoIterator<Item = Pace>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    paces
        .into_iter()
        .filter(|pace| !pace.admits(now))
        .map(Pace::eligible_at_us)
        .min()
        .and_then(DateTime::from_timestamp_micros)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::*;

    fn at(us: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(us).expect("in range")
    }

    /// Assignments admitted at each of `times` (ascending), debiting each one.
    fn admitted(mut pace: Pace, times: &[i64]) -> usize {
        let mut n = 0;
        for &t in times {
            if pace.admits(at(t)) {
                pace = pace.debited(at(t));
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_fresh_bucket_bursts_n_then_refills_one_per_interval() {
        let rate = AssignmentsPerMinute::new(6).expect("valid");
        let t0 = 1_800_000_000_000_000;
        let mut pace = Pace {
            per_minute: rate,
            tat_us: 0,
        };
        for _ in 0..6 {
            assert!(pace.admits(at(t0)));
            pace = pace.debited(at(t0));
        }
        assert!(!pace.admits(at(t0)));
        let again = at(t0) + TimeDelta::seconds(10);
        assert_eq!(next_eligible([pace], at(t0)), Some(again));
        assert!(!pace.admits(again - TimeDelta::microseconds(1)));
        assert!(pace.admits(again));
        pace = pace.debited(again);
        assert!(!pace.admits(again));
        assert!(pace.admits(again + TimeDelta::seconds(10)));
    }

    #[test]
    fn rates_outside_the_range_are_refused() {
        assert!(AssignmentsPerMinute::new(0).is_err());
        assert!(AssignmentsPerMinute::new(-1).is_err());
        assert!(AssignmentsPerMinute::new(60_001).is_err());
        assert_eq!(
            AssignmentsPerMinute::new(60_000).map(AssignmentsPerMinute::interval_us),
            Ok(1_000)
        );
    }

    proptest! {
        /// Never more than the burst plus one per elapsed interval, over any sequence of
        /// attempts: the bucket's guarantee.
        #[test]
        fn never_more_than_burst_plus_refill(
            n in 1_i64..200,
            mut times in prop::collection::vec(0_i64..600_000_000, 1..300),
        ) {
            times.sort_unstable();
            let rate = AssignmentsPerMinute::new(n).expect("valid");
            let pace = Pace { per_minute: rate, tat_us: 0 };
            let first = times[0];
            let last = times[times.len() - 1];
            let refills = (last - first) / rate.interval_us();
            let admitted = admitted(pace, &times) as i64;
            prop_assert!(admitted <= n + refills, "{admitted} > {n} + {refills}");
        }

        /// Whoever is refused is admitted exactly from the instant `next_eligible` names,
        /// not one microsecond before: a drain scheduled then finds it eligible.
        #[test]
        fn next_eligible_is_exact(
            n in 1_i64..1_000,
            tat in 0_i64..10_000_000_000,
            now in 0_i64..10_000_000_000,
        ) {
            let pace = Pace { per_minute: AssignmentsPerMinute::new(n).expect("valid"), tat_us: tat };
            match next_eligible([pace], at(now)) {
                None => prop_assert!(pace.admits(at(now))),
                Some(when) => {
                    prop_assert!(!pace.admits(at(now)));
                    prop_assert!(when > at(now));
                    prop_assert!(pace.admits(when));
                    prop_assert!(!pace.admits(when - TimeDelta::microseconds(1)));
                }
            }
        }

        /// Attempts spaced one interval apart are all admitted, forever: the steady rate.
        #[test]
        fn the_steady_rate_is_always_admitted(n in 1_i64..1_000, steps in 1_usize..500) {
            let rate = AssignmentsPerMinute::new(n).expect("valid");
            let times: Vec<i64> = (0..steps as i64).map(|k| 1_000 + k * rate.interval_us()).collect();
            prop_assert_eq!(admitted(Pace { per_minute: rate, tat_us: 0 }, &times), steps);
        }
    }
}
