//! Prefetch decided per kind from observed run times.
//!
//! Claiming ahead of free slots is what makes short jobs fast (one claim serves many of them,
//! and the next job starts without waiting for a claim), but a job claimed ahead waits in this
//! replica's buffer, leased and `running`, while another replica might be idle. So a kind
//! claims ahead only as many jobs as its slots are expected to finish within
//! `worker.prefetch_wait`, at the run time observed for it here:
//! `allowance = prefetch_wait × slots / typical run time`, at most [`cap`]: 16 × slots or 512,
//! whichever is more. With the default of 5 ms, no-op jobs get the cap, 1 ms jobs 5 × slots,
//! 10 ms jobs on 8 slots get 4, 100 ms jobs get none.
//!
//! The typical run time follows increases at once and decreases slowly (an eighth of the way
//! per job), so one long job stops the kind's prefetch when it finishes, and it returns only
//! after a run of short ones. A kind with no finished job yet gets no prefetch. A fixed
//! `worker.prefetch` still applies as a floor; rate-limited kinds never get any (see
//! `room_by_kind`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// At most this many jobs per slot are claimed ahead...
const MAX_PER_SLOT: usize = 16;
/// ...or this many in all, whichever is more: a claim costs about the same for 100 jobs as for
/// 500, so few slots of very short jobs still get claims large enough to keep them busy.
const MAX_AHEAD: usize = 512;

/// The most jobs that `slots` slots may hold claimed ahead, whatever their run time: a backstop
/// for run times that are too short to measure well (the wait rule binds first for jobs over
/// `prefetch_wait × slots / cap`, 80 µs on 8 slots at the default 5 ms).
pub(crate) fn cap(slots: usize) -> usize {
    slots.saturating_mul(MAX_PER_SLOT).max(MAX_AHEAD)
}

/// The typical run time of each kind's jobs here.
#[derive(Debug, Default)]
pub(crate) struct RunTimes {
    /// Nanoseconds; 0 until the kind's first job finished.
    by_kind: HashMap<String, AtomicU64>,
}

impl RunTimes {
    pub(crate) fn new(kinds: impl IntoIterator<Item = String>) -> Self {
        RunTimes {
            by_kind: kinds
                .into_iter()
                .map(|kind| (kind, AtomicU64::new(0)))
                .collect(),
        }
    }

    /// A job of `kind` ran for `took`.
    pub(crate) fn record(&self, kind: &str, took: Duration) {
        let Some(typical) = self.by_kind.get(kind) else {
            return;
        };
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Concurrent jobs of a kind may race here; losing one sample of many is harmless.
        let old = typical.load(Ordering::Relaxed);
        typical.store(follow(old, sample), Ordering::Relaxed);
    }

    /// The typical run time of `kind`, once one of its jobs finished.
    pub(crate) fn typical(&self, kind: &str) -> Option<Duration> {
        let nanos = self.by_kind.get(kind)?.load(Ordering::Relaxed);
        (nanos > 0).then(|| Duration::from_nanos(nanos))
    }
}

/// The next typical value after `sample` (both in nanoseconds; `old` 0 means none yet): up at
/// once, down by an eighth of the difference.
fn follow(old: u64, sample: u64) -> u64 {
    if old == 0 || sample >= old {
        sample
    } else {
        old - (old - sample) / 8
    }
}

/// How many jobs of a kind with `slots` slots and a `typical` run time may wait claimed ahead,
/// so that the last of them is expected to start within `wait`.
pub(crate) fn allowance(typical: Option<Duration>, slots: usize, wait: Duration) -> usize {
    let Some(typical) = typical else {
        return 0;
    };
    let expected = wait.as_nanos() * slots as u128 / typical.as_nanos().max(1);
    usize::try_from(expected)
        .unwrap_or(usize::MAX)
        .min(cap(slots))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(5);

    #[test]
    fn a_kind_never_seen_finishing_gets_no_prefetch() {
        assert_eq!(allowance(None, 32, WAIT), 0);
        assert_eq!(RunTimes::new(["a".to_owned()]).typical("a"), None);
    }

    #[test]
    fn short_jobs_get_up_to_the_cap_and_long_ones_none() {
        assert_eq!(allowance(Some(Duration::from_micros(50)), 32, WAIT), 512);
        assert_eq!(allowance(Some(Duration::from_micros(1)), 64, WAIT), 1024);
        assert_eq!(allowance(Some(Duration::from_micros(1)), 8, WAIT), 512);
        assert_eq!(allowance(Some(Duration::from_micros(1)), 1, WAIT), 512);
        assert_eq!(allowance(Some(Duration::from_micros(50)), 1, WAIT), 100);
        assert_eq!(allowance(Some(Duration::from_millis(1)), 8, WAIT), 40);
        assert_eq!(allowance(Some(Duration::from_millis(10)), 8, WAIT), 4);
        assert_eq!(allowance(Some(Duration::from_millis(100)), 8, WAIT), 0);
        assert_eq!(allowance(Some(Duration::from_secs(60)), 10_000, WAIT), 0);
        assert_eq!(
            allowance(Some(Duration::from_micros(50)), 32, Duration::ZERO),
            0
        );
    }

    #[test]
    fn the_last_job_claimed_ahead_is_expected_to_start_within_the_wait() {
        for millis in [1u64, 3, 7, 20, 40] {
            let typical = Duration::from_millis(millis);
            let slots = 8;
            let ahead = allowance(Some(typical), slots, WAIT);
            // The buffer drains at `slots` jobs per run time.
            let waited = typical * u32::try_from(ahead).unwrap() / u32::try_from(slots).unwrap();
            assert!(waited <= WAIT, "{millis} ms: {ahead} ahead wait {waited:?}");
        }
    }

    #[test]
    fn one_long_job_stops_prefetch_at_once_and_short_ones_bring_it_back_slowly() {
        let times = RunTimes::new(["render".to_owned()]);
        for _ in 0..10 {
            times.record("render", Duration::from_micros(100));
        }
        assert_eq!(allowance(times.typical("render"), 8, WAIT), 400);

        times.record("render", Duration::from_secs(2));
        assert_eq!(times.typical("render"), Some(Duration::from_secs(2)));
        assert_eq!(allowance(times.typical("render"), 8, WAIT), 0);

        let mut short_jobs = 0;
        while allowance(times.typical("render"), 8, WAIT) == 0 {
            times.record("render", Duration::from_micros(100));
            short_jobs += 1;
        }
        assert!(short_jobs >= 25, "came back after {short_jobs} short jobs");
    }

    #[test]
    fn kinds_not_served_here_are_ignored() {
        let times = RunTimes::new(["a".to_owned()]);
        times.record("b", Duration::from_millis(1));
        assert_eq!(times.typical("b"), None);
    }
}
