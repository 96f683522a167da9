//! Per-kind start rates (`kinds.<k>.rate_limit`), enforced inside the claim (migration 0015).
//!
//! The rate itself ([`RateLimit`], what a window allows) is pure and lives with the kind's other
//! limits in `crate::limits`. The claims of rate-limited kinds run under the capped-claim
//! advisory lock (`queue::claim`), in the claim's transaction (which is why this is part of
//! the claim); each reads the kind's recent starts (`ClaimRates::read`), takes at most
//! [`RateLimit::room`], and records what it took (`ClaimRates::started`) at its transaction's
//! `now()`, the instant the history shows for those starts. Its statements are
//! `queue::sql::rate`. The operators' count of a window's starts (`kinds`) is
//! `control::kinds::Kinds::starts_in_window`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::limits::{RateLimit, Start};
use crate::queue::sql;

/// The rates of one claim, read under the capped-claim lock: what each rate-limited kind may
/// start, and what the claim started.
#[derive(Debug, Default)]
pub(crate) struct ClaimRates {
    limits: HashMap<String, RateLimit>,
    /// The claim's time: `$now`, or the transaction's `now()`.
    at: DateTime<Utc>,
    /// `$now` as given (NULL: the transaction's `now()`), for the statements.
    now: Option<DateTime<Utc>>,
    /// The database's wall clock when the starts were read (waits are measured from it).
    clock: DateTime<Utc>,
    /// Starts by kind, within a period either side of `at`.
    starts: HashMap<String, Vec<Start>>,
}

/// Added to the wait for a rate's next start, so that the claim that follows finds the slot
/// open rather than a few microseconds early.
const RATE_SLACK: Duration = Duration::from_millis(2);

impl ClaimRates {
    /// Read the starts of those of `kinds` that have a rate in `limits`, within a period either
    /// side of the claim's time (`now`, or the transaction's `now()`). Reads nothing when none
    /// has. Call it under the capped-claim lock.
    pub(crate) async fn read(
        conn: &mut sqlx::PgConnection,
        limits: &HashMap<String, RateLimit>,
        kinds: &[String],
        now: Option<DateTime<Utc>>,
    ) -> Result<Self, sqlx::Error> {
        let limits: HashMap<String, RateLimit> = kinds
            .iter()
            .filter_map(|k| Some((k.clone(), *limits.get(k)?)))
            .collect();
        if limits.is_empty() {
            return Ok(ClaimRates::default());
        }
        let (names, periods): (Vec<&str>, Vec<f64>) = limits
            .iter()
            .map(|(k, r)| (k.as_str(), r.period().as_secs_f64()))
            .unzip();
        let (at, clock, row_kinds, times, jobs): StartsRow =
            sqlx::query_as(sql::rate::RECENT_STARTS)
                .bind(&names)
                .bind(&periods)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
        let mut starts: HashMap<String, Vec<Start>> = HashMap::new();
        for ((kind, at), jobs) in row_kinds.into_iter().zip(times).zip(jobs) {
            starts.entry(kind).or_default().push(Start {
                at,
                jobs: i64::from(jobs),
            });
        }
        Ok(ClaimRates {
            limits,
            at,
            now,
            clock,
            starts,
        })
    }

    /// Whether `kind` is rate-limited in this claim.
    pub(crate) fn limits(&self, kind: &str) -> bool {
        self.limits.contains_key(kind)
    }

    /// How many jobs of `kind` its rate lets this claim start (`None`: no rate).
    pub(crate) fn room(&self, kind: &str) -> Option<u32> {
        let limit = self.limits.get(kind)?;
        let log = self.starts.get(kind).map_or(&[][..], Vec::as_slice);
        Some(limit.room(log, self.at))
    }

    /// The claim started `taken` jobs of rate-limited `kind`: record them (and prune the kind's
    /// old starts). Returns when its next start is allowed if the rate held the claim back:
    /// the claim was `cut_short` (took all it was allowed, with room for more) and the rate
    /// allows no more now.
    pub(crate) async fn started(
        &mut self,
        conn: &mut sqlx::PgConnection,
        kind: &str,
        taken: u32,
        cut_short: bool,
    ) -> Result<Option<Duration>, sqlx::Error> {
        let Some(limit) = self.limits.get(kind).copied() else {
            return Ok(None);
        };
        let log = self.starts.entry(kind.to_owned()).or_default();
        if taken > 0 {
            sqlx::query(sql::rate::RECORD_STARTS)
                .bind(kind)
                .bind(i32::try_from(taken).unwrap_or(i32::MAX))
                .bind(self.now)
                .bind(limit.period().as_secs_f64())
                .execute(&mut *conn)
                .await?;
            log.push(Start {
                at: self.at,
                jobs: i64::from(taken),
            });
        }
        if !cut_short || limit.room(log, self.at) > 0 {
            return Ok(None);
        }
        let wait = (limit.next_start(log, self.at) - self.clock)
            .to_std()
            .unwrap_or(Duration::ZERO);
        Ok(Some(wait + RATE_SLACK))
    }
}

/// [`sql::rate::RECENT_STARTS`]'s row: the claim's time, the clock, and the starts as columns.
type StartsRow = (
    DateTime<Utc>,
    DateTime<Utc>,
    Vec<String>,
    Vec<DateTime<Utc>>,
    Vec<i32>,
);
