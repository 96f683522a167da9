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
//! The refusal itself is a queue fact: [`QuotaExceeded`], the one parse of it, lives in
//! `queue::refusal` (mapped once into `queue::Error` and from there into the API's 429) and is
//! re-exported here. This module holds [`Quotas`], the operators' reads and changes of the
//! table. Changes hold from the next insert on: the
//! trigger reads the table every time, so nothing needs a restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::sql::quota as sql;
use crate::config::checked_kind_name;

/// The quota row that applies to every kind without a row of its own.
pub use crate::queue::refusal::DEFAULT_QUOTA as DEFAULT;
/// The refusal of an insert beyond a quota: a queue fact, re-exported here beside the quotas.
pub use crate::queue::refusal::{QUOTA_SQLSTATE, QuotaExceeded, QuotaLimit};

/// Longest period of a `max_created` quota (the table's CHECK has the same bound).
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

pub use super::{Error, Result};

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
        checked_kind_name(kind, Error::InvalidQuotaKind)
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
