//! Time as an input: the store's [`Clock`] (the system's, or one a test moves), and the
//! [`Timer`] of the drain a refilling pace bucket is owed.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// The current time at the precision stored (microseconds), so what a write returns
/// equals what a later read returns.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Where the store reads the time for what depends on it: registrations and drains (their
/// timestamps, and the pace buckets of `crm_core::Pace`). The system's by default; a test
/// builds a [`Clock::fake`] and moves it instead of sleeping. Cloning shares a fake clock.
#[derive(Clone, Default)]
pub struct Clock {
    /// Microseconds since the epoch, when fake.
    fake: Option<Arc<AtomicI64>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fake {
            None => f.write_str("Clock::System"),
            Some(_) => write!(f, "Clock::Fake({})", self.now()),
        }
    }
}

impl Clock {
    /// The system's clock.
    #[must_use]
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `start` until [`Clock::advance`]d.
    #[must_use]
    pub fn fake(start: DateTime<Utc>) -> Self {
        Self {
            fake: Some(Arc::new(AtomicI64::new(start.timestamp_micros()))),
        }
    }

    /// Moves a fake clock forward (a system clock ignores it).
    pub fn advance(&self, by: TimeDelta) {
        if let Some(fake) = &self.fake {
            let by = by.num_microseconds().unwrap_or(i64::MAX);
            fake.fetch_add(by, Ordering::SeqCst);
        }
    }

    /// The current time at the precision stored (microseconds), so that what a write
    /// returns equals what a later read returns.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        match &self.fake {
            None => now(),
            Some(fake) => {
                DateTime::from_timestamp_micros(fake.load(Ordering::SeqCst)).unwrap_or_default()
            }
        }
    }
}

/// The earliest moment a drain is owed because an operator's pace bucket refills then
/// (`crm_core::next_eligible` of a drain or registration that left contacts waiting while
/// someone was rate-limited). The server waits for it ([`Timer::due`]) and drains, so the
/// queue is served as soon as a bucket allows, not at the next sweep.
#[derive(Debug)]
pub struct Timer {
    /// Microseconds since the epoch; `i64::MAX` when nothing is owed.
    next_us: AtomicI64,
    /// Woken when `next_us` moves earlier.
    earlier: tokio::sync::Notify,
}

impl Default for Timer {
    fn default() -> Self {
        Self {
            next_us: AtomicI64::new(i64::MAX),
            earlier: tokio::sync::Notify::new(),
        }
    }
}

impl Timer {
    /// Owes a drain at `at` (keeping an earlier one owed already).
    pub fn arm(&self, at: Option<DateTime<Utc>>) {
        let Some(at) = at else { return };
        let at = at.timestamp_micros();
        if self.next_us.fetch_min(at, Ordering::SeqCst) > at {
            self.earlier.notify_one();
        }
    }

    /// Owes a drain at `at` only (or none): what a drain of every source found, which
    /// supersedes what was owed before it.
    pub fn reset(&self, at: Option<DateTime<Utc>>) {
        let at = at.map_or(i64::MAX, |at| at.timestamp_micros());
        if self.next_us.swap(at, Ordering::SeqCst) > at {
            self.earlier.notify_one();
        }
    }

    /// The moment a drain is owed, if one is.
    #[must_use]
    pub fn next(&self) -> Option<DateTime<Utc>> {
        match self.next_us.load(Ordering::SeqCst) {
            i64::MAX => None,
            us => DateTime::from_timestamp_micros(us),
        }
    }

    /// Resolves once the owed moment has come by `clock` (then nothing is owed any more:
    /// the caller drains, and that drain arms the timer again if someone is still
    /// rate-limited). Pending while nothing is owed.
    pub async fn due(&self, clock: &Clock) {
        loop {
            let wait = match self.next() {
                None => None,
                Some(at) => match (at - clock.now()).to_std() {
                    // Not in the future: due.
                    Err(_) => {
                        self.next_us.store(i64::MAX, Ordering::SeqCst);
                        return;
                    }
                    Ok(wait) if wait.is_zero() => {
                        self.next_us.store(i64::MAX, Ordering::SeqCst);
                        return;
                    }
                    Ok(wait) => Some(wait),
                },
            };
            match wait {
                None => self.earlier.notified().await,
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.earlier.notified() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_timer_is_due_at_the_earliest_moment_armed() {
        let clock = Clock::system();
        let timer = Arc::new(Timer::default());
        assert_eq!(timer.next(), None);
        let later = clock.now() + TimeDelta::seconds(3600);
        timer.arm(Some(later));
        timer.arm(Some(clock.now() + TimeDelta::milliseconds(50)));
        timer.arm(Some(later));
        let due = tokio::time::timeout(Duration::from_secs(10), timer.due(&clock)).await;
        assert!(due.is_ok(), "the earlier moment was not kept");
        assert_eq!(timer.next(), None, "a due timer owes nothing more");
        // Nothing owed: pending until armed.
        let idle = tokio::time::timeout(Duration::from_millis(50), timer.due(&clock)).await;
        assert!(idle.is_err());
    }

    #[test]
    fn a_fake_clock_moves_only_when_told() {
        let start = DateTime::from_timestamp_micros(1_800_000_000_000_000).expect("valid");
        let clock = Clock::fake(start);
        assert_eq!(clock.now(), start);
        clock.clone().advance(TimeDelta::seconds(10));
        assert_eq!(clock.now(), start + TimeDelta::seconds(10));
    }
}
