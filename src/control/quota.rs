//! Per-user admission quotas, enforced at insert by the database.
//!
//! The rule lives in migration 0016: a row of `public.studio_quotas` per kind (or [`DEFAULT`]
//! for every kind without one) caps a user's unfinished jobs and the jobs they create in a
//! period, and the trigger `studio_jobs_20_quota` refuses a user's insert beyond a cap with
//! SQLSTATE [`QUOTA_SQLSTATE`]. Members of `studio_worker` and `service_role` are not checked.
//! Migration 0019 makes concurrent inserts of one user and kind take turns on a row of
//! `public.studio_quota_holds`, so no isolation level overshoots a cap (REPEATABLE READ and
//! SERIALIZABLE callers that raced get 40001 and retry).
//!
//! This module owns both sides of that contract in Rust: [`QuotaExceeded`], the one parse of the
//! refusal (mapped once into `queue::Error` and from there into the API's 429), and [`Quotas`],
//! the operators' reads and changes of the table. Changes hold from the next insert on: the
//! trigger reads the table every time, so nothing needs a restart.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::sql::quota as sql;
use crate::config::checked_kind_name;

/// The SQLSTATE of a refusal (class `PT` is not used by PostgreSQL; PostgREST answers `PT429`
/// with HTTP 429).
pub const QUOTA_SQLSTATE: &str = "PT429";

/// The quota row that applies to every kind without a row of its own.
pub const DEFAULT: &str = "*";

/// Longest period of a `max_created` quota (the table's CHECK has the same bound).
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

/// Which cap refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// Most unfinished (pending or running) jobs of the kind per user.
    MaxUnfinished,
    /// Most jobs of the kind created per user within a period.
    MaxCreated,
}

impl QuotaLimit {
    /// The name used in the refusal's detail and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::MaxUnfinished => "max_unfinished",
            QuotaLimit::MaxCreated => "max_created",
        }
    }
}

/// A user's insert refused by a quota: what the database's PT429 says, typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct QuotaExceeded {
    /// The kind of the refused job.
    pub kind: String,
    /// Which cap.
    pub quota: QuotaLimit,
    /// Whether the cap came from the default row (`*`) rather than the kind's own.
    pub default: bool,
    /// The cap.
    pub limit: i64,
    /// The period of a `max_created` cap.
    pub per: Option<Duration>,
    /// How long until a slot frees, when waiting helps (the period cap); `None` when only a
    /// job finishing (or being cancelled) frees one.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.quota, self.per) {
            (QuotaLimit::MaxCreated, Some(per)) => write!(
                f,
                "quota exceeded: at most {} {} jobs per user every {}",
                self.limit,
                self.kind,
                humantime::format_duration(per)
            )?,
            _ => write!(
                f,
                "quota exceeded: at most {} unfinished {} jobs per user",
                self.limit, self.kind
            )?,
        }
        match self.retry_after {
            Some(wait) => write!(f, "; try again in {}", humantime::format_duration(wait)),
            None => f.write_str("; wait until one of them finishes, or cancel one"),
        }
    }
}

impl QuotaExceeded {
    /// The refusal in a database error, if it is one.
    pub fn from_database(db: &dyn sqlx::error::DatabaseError) -> Option<QuotaExceeded> {
        if db.code().as_deref() != Some(QUOTA_SQLSTATE) {
            return None;
        }
        let detail = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
            .detail()?;
        QuotaExceeded::parse_detail(detail)
    }

    /// Parse the refusal's DETAIL (`quota=… kind=… scope=… limit=…` and, for `max_created`,
    /// `per_seconds=… retry_after=…`; see migration 0016).
    pub fn parse_detail(detail: &str) -> Option<QuotaExceeded> {
        let value = |key: &str| {
            detail.split(' ').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then_some(v)
            })
        };
        let seconds = |key: &str| value(key)?.parse().ok().map(Duration::from_secs);
        let quota = match value("quota")? {
            "max_unfinished" => QuotaLimit::MaxUnfinished,
            "max_created" => QuotaLimit::MaxCreated,
            _ => return None,
        };
        let default = match value("scope")? {
            "default" => true,
            "kind" => false,
            _ => return None,
        };
        let (per, retry_after) = match quota {
            QuotaLimit::MaxUnfinished => (None, None),
            QuotaLimit::MaxCreated => {
                (Some(seconds("per_seconds")?), Some(seconds("retry_after")?))
            }
        };
        Some(QuotaExceeded {
            kind: value("kind")?.to_owned(),
            quota,
            default,
            limit: value("limit")?.parse().ok()?,
            per,
            retry_after,
        })
    }

    /// The quota row that refused: the kind, or [`DEFAULT`]. Bounded by the table's rows, so
    /// fit for a metrics label (the job's kind is not: users choose it).
    pub fn quota_row(&self) -> &str {
        if self.default { DEFAULT } else { &self.kind }
    }
}

/// Errors of quota changes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a kind name the queue can hold, nor [`DEFAULT`]; nothing was changed.
    #[error("invalid quota kind {0:?}: expected `*` (the default) or a kind name")]
    InvalidKind(String),
    /// A limit out of range; nothing was changed.
    #[error("invalid quota: {0}")]
    InvalidLimit(&'static str),
    /// Database errors (the table's CHECKs refuse what slipped through).
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a quota row caps. `None`: no cap (a kind's row with no caps exempts it from the
/// default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most unfinished jobs per user (0: users may not create the kind).
    pub max_unfinished: Option<u32>,
    /// Most jobs created per user (at least 1) within the period (1 s to 366 days).
    pub max_created: Option<(u32, Duration)>,
}

impl Limits {
    /// Check the bounds the table's CHECKs enforce, so a bad value is refused before any
    /// statement runs.
    ///
    /// # Errors
    /// [`Error::InvalidLimit`] naming the bound.
    pub fn check(&self) -> Result<(), Error> {
        if self
            .max_unfinished
            .is_some_and(|n| i32::try_from(n).is_err())
        {
            return Err(Error::InvalidLimit("max_unfinished is too large"));
        }
        if let Some((n, per)) = self.max_created {
            if n == 0 || i32::try_from(n).is_err() {
                return Err(Error::InvalidLimit("max_created must be 1 to 2147483647"));
            }
            if per < Duration::from_secs(1) || per > MAX_PERIOD {
                return Err(Error::InvalidLimit("the period must be 1s to 366 days"));
            }
        }
        Ok(())
    }
}

/// One row of `public.studio_quotas`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Quota {
    /// The kind, or [`DEFAULT`].
    pub kind: String,
    /// Most unfinished jobs per user.
    pub max_unfinished: Option<i32>,
    /// Most jobs created per user within `per_seconds`.
    pub max_created: Option<i32>,
    /// The period of `max_created`, in seconds.
    pub per_seconds: Option<f64>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who made it (free text from the operator's command).
    pub updated_by: Option<String>,
}

/// `kind` if it names a kind or the default.
fn checked(kind: &str) -> Result<&str, Error> {
    if kind == DEFAULT {
        Ok(kind)
    } else {
        checked_kind_name(kind, Error::InvalidKind)
    }
}

/// The quotas table, over a pool whose role is (a member of) `studio_worker`.
#[derive(Debug, Clone)]
pub struct Quotas {
    pool: PgPool,
}

impl Quotas {
    /// The table over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Quotas { pool }
    }

    /// Every quota, the default first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self) -> Result<Vec<Quota>, Error> {
        Ok(sqlx::query_as(sql::LIST).fetch_all(&self.pool).await?)
    }

    /// Set the quota of `kind` (or [`DEFAULT`]) to `limits`, replacing its row as a whole.
    /// Holds from the next insert on.
    ///
    /// # Errors
    /// [`Error::InvalidKind`], [`Error::InvalidLimit`] (nothing is changed), database errors.
    pub async fn set(&self, kind: &str, limits: Limits, by: Option<&str>) -> Result<Quota, Error> {
        let kind = checked(kind)?;
        limits.check()?;
        let to_i32 = |n: u32| i32::try_from(n).map_err(|_| Error::InvalidLimit("too large"));
        let unfinished = limits.max_unfinished.map(to_i32).transpose()?;
        let created = limits.max_created.map(|(n, _)| to_i32(n)).transpose()?;
        let per = limits.max_created.map(|(_, per)| per.as_secs_f64());
        Ok(sqlx::query_as(sql::SET)
            .bind(kind)
            .bind(unfinished)
            .bind(created)
            .bind(per)
            .bind(by)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Remove the quota of `kind` (or [`DEFAULT`]); returns the row removed, `None` when there
    /// was none.
    ///
    /// # Errors
    /// [`Error::InvalidKind`], database errors.
    pub async fn clear(&self, kind: &str) -> Result<Option<Quota>, Error> {
        Ok(sqlx::query_as(sql::CLEAR)
            .bind(checked(kind)?)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_refusal_parses_with_its_wait() {
        let q = QuotaExceeded::parse_detail(
            "quota=max_created kind=render scope=default limit=100 per_seconds=3600 retry_after=42",
        )
        .unwrap();
        assert_eq!(q.quota, QuotaLimit::MaxCreated);
        assert_eq!(q.kind, "render");
        assert!(q.default);
        assert_eq!(q.quota_row(), "*");
        assert_eq!(q.limit, 100);
        assert_eq!(q.per, Some(Duration::from_secs(3600)));
        assert_eq!(q.retry_after, Some(Duration::from_secs(42)));
        assert_eq!(
            q.to_string(),
            "quota exceeded: at most 100 render jobs per user every 1h; try again in 42s"
        );
    }

    #[test]
    fn the_unfinished_refusal_parses_without_a_wait() {
        let q = QuotaExceeded::parse_detail("quota=max_unfinished kind=render scope=kind limit=10")
            .unwrap();
        assert_eq!(q.quota, QuotaLimit::MaxUnfinished);
        assert_eq!(q.quota_row(), "render");
        assert_eq!(q.retry_after, None);
    }

    #[test]
    fn other_details_are_not_refusals() {
        assert_eq!(QuotaExceeded::parse_detail("something else"), None);
        assert_eq!(
            QuotaExceeded::parse_detail("quota=max_created kind=a scope=kind limit=1"),
            None
        );
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let created = |n, secs| Limits {
            max_created: Some((n, Duration::from_secs(secs))),
            ..Limits::default()
        };
        assert!(created(0, 60).check().is_err());
        assert!(created(1, 0).check().is_err());
        assert!(created(1, 400 * 24 * 3600).check().is_err());
        assert!(created(5, 3600).check().is_ok());
        let unfinished = |n| Limits {
            max_unfinished: Some(n),
            ..Limits::default()
        };
        assert!(unfinished(u32::MAX).check().is_err());
        assert!(unfinished(0).check().is_ok());
    }
}
