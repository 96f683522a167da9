//! A kind's start rate (`kinds.<k>.rate_limit`): at most `count` starts in any window of
//! `period`, cluster-wide. Pure: the claim (`queue::claim`, migration 0015) reads the kind's
//! recent starts, asks [`RateLimit::room`] how many may start, and records what it took.
//!
//! Invariant: for every window of length `period`, the starts recorded in it never exceed
//! `count`; and for every window of one slice (`period / count`), they never exceed `burst`
//! (default 1: starts spread evenly, one per slice, as GCRA does; `burst = count` lets the
//! whole period's starts go at once). Claims can commit in another order than their transactions started (lock order),
//! so a claim may find starts later than its own time: [`RateLimit::room`] then counts every
//! window that contains its time, also those ending after it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

/// At most `count` starts in any window of `period`, and at most `burst` in any window of
/// `period / count`, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RateLimit {
    count: u32,
    period: Duration,
    burst: u32,
}

/// The largest `count` accepted.
const MAX_COUNT: u32 = 1_000_000;
/// The longest period accepted: the claims keep a period of starts, so one day at most.
const MAX_PERIOD: Duration = Duration::from_secs(86_400);

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?}: {reason}; expected <count>/<period> such as 5/s, 60/min, 1000/h or 10/5s \
     (count 1..=1000000, period 1s..=1d)"
)]
pub struct RateParseError {
    text: String,
    reason: &'static str,
}

impl RateLimit {
    /// `count` starts per `period`.
    ///
    /// # Errors
    /// A zero or too large count, or a period under a second or over a day.
    pub fn new(count: u32, period: Duration) -> Result<Self, RateParseError> {
        let refuse = |reason| RateParseError {
            text: format!("{count}/{}s", period.as_secs_f64()),
            reason,
        };
        if count == 0 || count > MAX_COUNT {
            return Err(refuse("the count must be between 1 and 1000000"));
        }
        if period < Duration::from_secs(1) || period > MAX_PERIOD {
            return Err(refuse("the period must be between 1s and 1d"));
        }
        Ok(RateLimit {
            count,
            period,
            burst: 1,
        })
    }

    /// The same rate letting up to `burst` starts go together in one slice (`period / count`);
    /// `burst = count` allows the whole period's starts at once.
    ///
    /// # Errors
    /// A burst of 0 or above the count.
    pub fn with_burst(self, burst: u32) -> Result<Self, String> {
        if burst == 0 || burst > self.count {
            return Err(format!(
                "must be between 1 and the rate's count ({})",
                self.count
            ));
        }
        Ok(RateLimit { burst, ..self })
    }

    /// Starts allowed together in one slice of `period / count` (default 1).
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Starts allowed per period.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The window length.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }

    fn span(&self) -> TimeDelta {
        // The period is at most a day (checked in `new`): always representable.
        TimeDelta::from_std(self.period).unwrap_or(TimeDelta::MAX)
    }

    /// The two windows a start must fit: `count` per period and `burst` per slice.
    fn windows(&self) -> [(i64, TimeDelta); 2] {
        let slice = self.span() / i32::try_from(self.count).unwrap_or(i32::MAX);
        [
            (i64::from(self.count), self.span()),
            (i64::from(self.burst), slice.max(TimeDelta::microseconds(1))),
        ]
    }

    /// How many jobs may start at `at`, given the kind's recorded `starts` (any order): what
    /// the fullest window containing `at` leaves, of a period (`count`) and of a slice
    /// (`burst`). Windows ending after `at` count too (starts recorded by claims whose
    /// transactions began later but took the lock first).
    #[must_use]
    pub fn room(&self, starts: &[Start], at: DateTime<Utc>) -> u32 {
        let window = Window::new(starts);
        self.windows()
            .into_iter()
            .map(|(limit, span)| limit - window.fullest(at, span))
            .min()
            .map_or(0, |room| u32::try_from(room).unwrap_or(0))
    }

    /// The earliest time from `at` at which one more start fits, counting the starts recorded
    /// up to then: the time the oldest starts leave the period's window and the slice's. A
    /// hint for when to look again; the claim decides.
    #[must_use]
    pub fn next_start(&self, starts: &[Start], at: DateTime<Utc>) -> DateTime<Utc> {
        let window = Window::new(starts);
        self.windows()
            .into_iter()
            .map(|(limit, span)| window.next_start(at, limit, span))
            .max()
            .unwrap_or(at)
    }
}

impl FromStr for RateLimit {
    type Err = RateParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| RateParseError {
            text: text.to_owned(),
            reason,
        };
        let (count, period) = text
            .trim()
            .split_once('/')
            .ok_or(refuse("no '/' between the count and the period"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| refuse("the count is not a positive whole number"))?;
        let period = period.trim();
        let unit_at = period
            .find(|c: char| !c.is_ascii_digit())
            .ok_or(refuse("the period has no unit (s, min, h, d)"))?;
        let (times, unit) = period.split_at(unit_at);
        let times: u64 = if times.is_empty() {
            1
        } else {
            times
                .parse()
                .map_err(|_| refuse("the period's multiple is too large"))?
        };
        let unit = match unit {
            "s" | "sec" | "second" => 1,
            "min" | "minute" => 60,
            "h" | "hour" => 3_600,
            "d" | "day" => 86_400,
            _ => return Err(refuse("unknown period unit (s, min, h, d)")),
        };
        let seconds = times
            .checked_mul(unit)
            .ok_or(refuse("the period must be between 1s and 1d"))?;
        RateLimit::new(count, Duration::from_secs(seconds)).map_err(|err| refuse(err.reason))
    }
}

impl TryFrom<String> for RateLimit {
    type Error = RateParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for RateLimit {
    /// The canonical form: `10/s`, `60/min`, `1000/h`, `1/d`, `10/5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period.as_secs();
        let (times, unit) = match secs {
            86_400 => (1, "d"),
            3_600 => (1, "h"),
            60 => (1, "min"),
            s if s % 3_600 == 0 => (s / 3_600, "h"),
            s if s % 60 == 0 => (s / 60, "min"),
            s => (s, "s"),
        };
        if times == 1 {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{times}{unit}", self.count)
        }
    }
}

/// Jobs of a kind started together by one claim, at its transaction's `now()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The claim's time (the history's `created_at` of these starts).
    pub at: DateTime<Utc>,
    /// How many jobs it started.
    pub jobs: i64,
}

/// Starts sorted by time, with running totals, to count any window in O(log n).
struct Window {
    starts: Vec<Start>,
    /// `totals[i]`: jobs started by `starts[..i]`.
    totals: Vec<i64>,
}

impl Window {
    fn new(starts: &[Start]) -> Self {
        let mut starts = starts.to_vec();
        starts.sort_by_key(|s| s.at);
        let mut totals = Vec::with_capacity(starts.len() + 1);
        totals.push(0);
        for s in &starts {
            totals.push(totals.last().copied().unwrap_or(0) + s.jobs);
        }
        Window { starts, totals }
    }

    /// The most starts in a window of `span` containing `at`. Windows containing `at` are
    /// (a - span, a] for a in [at, at + span); the count only grows at a start, so the
    /// fullest ends at `at` or at a later start.
    fn fullest(&self, at: DateTime<Utc>, span: TimeDelta) -> i64 {
        self.starts
            .iter()
            .map(|s| s.at)
            .filter(|a| *a > at && *a < at + span)
            .chain(std::iter::once(at))
            .map(|end| self.count(end - span, end))
            .max()
            .unwrap_or(0)
    }

    /// The earliest time from `at` at which the window of `span` ending then holds fewer
    /// than `limit`.
    fn next_start(&self, at: DateTime<Utc>, limit: i64, span: TimeDelta) -> DateTime<Utc> {
        let mut excess = self.count(at - span, at) - (limit - 1);
        if excess <= 0 {
            return at;
        }
        for start in self.starts.iter().filter(|s| s.at > at - span) {
            excess -= start.jobs;
            if excess <= 0 {
                return start.at + span;
            }
        }
        at + span
    }

    /// Jobs started in `(from, to]`.
    fn count(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let upto = |t: DateTime<Utc>| self.totals[self.starts.partition_point(|s| s.at <= t)];
        upto(to) - upto(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> RateLimit {
        text.parse().unwrap()
    }

    /// `text` with the whole period's starts allowed at once.
    fn bursty(text: &str) -> RateLimit {
        let limit = rate(text);
        limit.with_burst(limit.count()).unwrap()
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::milliseconds(1_000_000 + ms)
    }

    fn starts(list: &[(i64, i64)]) -> Vec<Start> {
        list.iter()
            .map(|&(ms, jobs)| Start { at: t(ms), jobs })
            .collect()
    }

    #[test]
    fn accepted_forms_parse_to_count_and_period() {
        let cases = [
            ("5/s", 5, 1),
            ("60/min", 60, 60),
            ("1000/h", 1000, 3600),
            ("10/5s", 10, 5),
            ("3/2min", 3, 120),
            (" 7 / 1d ", 7, 86_400),
            ("1/second", 1, 1),
            ("2/hour", 2, 3600),
        ];
        for (text, count, secs) in cases {
            let limit = rate(text);
            assert_eq!(
                (limit.count(), limit.period()),
                (count, Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn zero_negative_and_garbage_are_refused() {
        for text in [
            "",
            "5",
            "0/s",
            "-1/s",
            "5/0s",
            "5/",
            "/s",
            "5/ms",
            "5/m",
            "1.5/s",
            "5/s/s",
            "ten/s",
            "5/2d",
            "5/999999999999999999999s",
            "2000000/s",
            "5/-1s",
        ] {
            assert!(text.parse::<RateLimit>().is_err(), "{text:?} was accepted");
        }
        let err = "0/s".parse::<RateLimit>().unwrap_err().to_string();
        assert!(
            err.contains("60/min"),
            "the error shows the accepted forms: {err}"
        );
    }

    #[test]
    fn display_gives_back_a_form_that_parses_to_the_same_limit() {
        for text in [
            "5/s", "60/min", "1000/h", "10/5s", "3/2min", "1/d", "4/90s", "2/7200s",
        ] {
            let limit = rate(text);
            assert_eq!(rate(&limit.to_string()), limit, "{text} -> {limit}");
        }
        assert_eq!(rate("10/60s").to_string(), "10/min");
        assert_eq!(rate("10/5s").to_string(), "10/5s");
    }

    #[test]
    fn room_is_what_the_last_period_leaves() {
        let limit = bursty("10/s");
        let log = starts(&[(0, 4), (500, 3)]);

        assert_eq!(limit.room(&[], t(0)), 10);
        assert_eq!(limit.room(&log, t(600)), 3);
        // the start at 0 leaves the window (600 - 1000, 600] ... at 1000 exactly
        assert_eq!(limit.room(&log, t(999)), 3);
        assert_eq!(limit.room(&log, t(1000)), 7);
        assert_eq!(limit.room(&log, t(1500)), 10);
    }

    #[test]
    fn room_counts_windows_ending_after_the_claims_time() {
        // A claim whose transaction began at 100 takes the lock after one that began at 900 and
        // started 6: a window holding both must stay within the limit.
        let limit = bursty("10/s");
        let log = starts(&[(0, 3), (900, 6)]);

        assert_eq!(limit.room(&log, t(100)), 1, "(−100, 900] holds 9");
        assert_eq!(limit.room(&log, t(950)), 1);
        assert_eq!(
            limit.room(&log, t(1850)),
            4,
            "only the start at 900 is near"
        );
        assert_eq!(limit.room(&log, t(1950)), 10);
    }

    #[test]
    fn the_next_start_is_when_the_oldest_starts_leave_the_window() {
        let limit = bursty("10/s");
        let log = starts(&[(0, 4), (300, 4), (600, 2)]);

        assert_eq!(limit.next_start(&log, t(700)), t(1000), "4 leave at 1000");
        assert_eq!(limit.next_start(&starts(&[(0, 3)]), t(700)), t(700));
        let full = starts(&[(0, 5), (300, 10)]);
        assert_eq!(
            bursty("10/s").next_start(&full, t(400)),
            t(1300),
            "15 in the window (over a lowered limit): all must leave"
        );
    }

    #[test]
    fn by_default_starts_are_spread_one_per_slice() {
        let limit = rate("10/s");
        let log = starts(&[(0, 1)]);

        assert_eq!(limit.burst(), 1);
        assert_eq!(limit.room(&[], t(0)), 1, "one at a time, not ten");
        assert_eq!(limit.room(&log, t(99)), 0, "the slice is 100 ms");
        assert_eq!(limit.room(&log, t(100)), 1);
        assert_eq!(limit.room(&log, t(-50)), 0, "a later start counts too");
        assert_eq!(limit.next_start(&log, t(10)), t(100));
        // bursts are explicit, never above the count; the period's window still holds
        let burst = limit.with_burst(3).unwrap();
        assert_eq!(burst.room(&log, t(50)), 2);
        let full = starts(&[(0, 3), (100, 3), (200, 4)]);
        assert_eq!(burst.room(&full, t(300)), 0, "10 in the second");
        assert_eq!(burst.next_start(&full, t(350)), t(1000));
        assert!(limit.with_burst(0).is_err() && limit.with_burst(11).is_err());
    }

    /// Under the default, whatever the lock order, consecutive starts are a slice apart.
    #[test]
    fn claims_in_any_lock_order_start_a_slice_apart_by_default() {
        let limit = rate("10/s");
        let mut log: Vec<Start> = Vec::new();
        let mut x: i64 = 11;
        for _ in 0..2_000 {
            x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
            let at = t(x % 20_000);
            let take = limit.room(&log, at).min(4);
            if take > 0 {
                log.push(Start {
                    at,
                    jobs: i64::from(take),
                });
            }
        }
        let window = Window::new(&log);
        assert!(window.starts.iter().all(|s| s.jobs == 1));
        for pair in window.starts.windows(2) {
            assert!(pair[1].at - pair[0].at >= TimeDelta::milliseconds(100));
        }
        assert!(
            window.starts.len() >= 100,
            "the rate is used: {}",
            window.starts.len()
        );
    }

    /// Whatever order claims take the lock in, no window of a period holds more than the limit.
    #[test]
    fn claims_in_any_lock_order_never_overfill_a_window() {
        let limit = bursty("10/s");
        let mut log: Vec<Start> = Vec::new();
        // Pseudo-random claim times (ms) in lock order, each wanting 4 jobs.
        let mut x: i64 = 7;
        for _ in 0..2_000 {
            x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
            let at = t(x % 20_000);
            let take = limit.room(&log, at).min(4);
            if take > 0 {
                log.push(Start {
                    at,
                    jobs: i64::from(take),
                });
            }
        }
        let window = Window::new(&log);
        for s in &window.starts {
            let span = limit.span();
            let from = s.at - TimeDelta::microseconds(1);
            assert!(
                window.count(from, from + span) <= 10,
                "window from {}",
                s.at
            );
        }
        assert!(
            window.totals.last().copied().unwrap_or(0) >= 150,
            "the rate is used"
        );
    }
}
