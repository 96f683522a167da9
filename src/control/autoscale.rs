//! Autoscaling on runnable demand (migration 0025): the number of worker replicas the queue
//! needs, by the claim's own rules, and what the database must know to count it.
//!
//! The count is `public.studio_autoscale_demand(kinds, per_replica, horizon)`, a SQL function
//! that KEDA's PostgreSQL trigger calls as `studio_autoscaler` and that [`demand`] calls for the
//! `/metrics` gauge. The claim's limits are configuration (`kinds.<k>.max_running`,
//! `kinds.<k>.rate_limit`, `worker.max_running_per_user`): every process that loads a
//! configuration publishes them ([`publish_limits`]) when it starts, and the scheduler publishes
//! each schedule's next fire time ([`publish_next_fires`]), so the count holds while no worker
//! runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::sql::autoscale as sql;
use crate::config::Settings;

/// The claim limits of one configured kind, as the database learns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedLimits {
    /// The kind.
    pub kind: String,
    /// `kinds.<k>.max_running`.
    pub max_running: Option<u32>,
    /// `kinds.<k>.rate_limit`: starts per period.
    pub rate: Option<(u32, Duration)>,
    /// `worker.max_running_per_user` of this configuration (fair order only).
    pub max_running_per_user: Option<u32>,
}

/// The limits of every kind `settings` configures (a kind without limits too: its row says
/// so, replacing whatever an older configuration published).
#[must_use]
pub fn limits_of(settings: &Settings) -> Vec<PublishedLimits> {
    let per_user = (settings.worker.fair() && settings.worker.max_running_per_user > 0)
        .then_some(settings.worker.max_running_per_user);
    settings
        .kinds
        .iter()
        .map(|(kind, k)| PublishedLimits {
            kind: kind.clone(),
            max_running: k.limits.max_running,
            rate: k.limits.rate_limit.map(|r| (r.count(), r.period())),
            max_running_per_user: per_user,
        })
        .collect()
}

/// Publish `limits` (by `by`, e.g. the worker's id), so that the demand function counts with
/// them. One statement; a kind not listed keeps its row.
///
/// # Errors
/// Database errors.
pub async fn publish_limits(
    pool: &PgPool,
    limits: &[PublishedLimits],
    by: &str,
) -> sqlx::Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = limits.iter().map(|l| l.kind.as_str()).collect();
    let max_running: Vec<Option<i32>> = limits
        .iter()
        .map(|l| l.max_running.map(clamp_i32))
        .collect();
    let rate_count: Vec<Option<i32>> = limits
        .iter()
        .map(|l| l.rate.map(|(n, _)| clamp_i32(n)))
        .collect();
    let rate_secs: Vec<Option<f64>> = limits
        .iter()
        .map(|l| l.rate.map(|(_, period)| period.as_secs_f64()))
        .collect();
    // One configuration, one per-user cap: the first row's (all rows carry the same).
    let per_user = limits
        .first()
        .and_then(|l| l.max_running_per_user)
        .map(clamp_i32);
    sqlx::query(sql::PUBLISH_LIMITS)
        .bind(&kinds)
        .bind(&max_running)
        .bind(&rate_count)
        .bind(&rate_secs)
        .bind(per_user)
        .bind(by)
        .execute(pool)
        .await?;
    Ok(())
}

/// A schedule's next fire time, as the demand function counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextFire {
    /// The schedule's name.
    pub schedule: String,
    /// Its job's kind.
    pub kind: String,
    /// Its job's owner.
    pub user: Uuid,
    /// The next fire time.
    pub at: DateTime<Utc>,
}

/// Publish the next fire time of each schedule, each row counted for `fresh_for` (the
/// publisher refreshes it well before then; a stale row, left by a schedule no longer
/// configured or a scheduler that stopped, no longer counts).
///
/// # Errors
/// Database errors.
pub async fn publish_next_fires(
    pool: &PgPool,
    fires: &[NextFire],
    fresh_for: Duration,
) -> sqlx::Result<()> {
    if fires.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = fires.iter().map(|f| f.schedule.as_str()).collect();
    let kinds: Vec<&str> = fires.iter().map(|f| f.kind.as_str()).collect();
    let users: Vec<Uuid> = fires.iter().map(|f| f.user).collect();
    let at: Vec<DateTime<Utc>> = fires.iter().map(|f| f.at).collect();
    sqlx::query(sql::PUBLISH_NEXT_FIRES)
        .bind(&names)
        .bind(&kinds)
        .bind(&users)
        .bind(&at)
        .bind(fresh_for.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(())
}

/// Replicas needed for the runnable work of `kinds` (`None`: every kind), `per_replica` jobs
/// each, counting work due within `horizon`: the number KEDA's trigger reads.
///
/// # Errors
/// Database errors (a role that may not execute the function: 42501).
pub async fn demand(
    pool: &PgPool,
    kinds: Option<&[String]>,
    per_replica: u32,
    horizon: Duration,
) -> sqlx::Result<i64> {
    let replicas: Option<i32> = sqlx::query_scalar(sql::DEMAND)
        .bind(kinds)
        .bind(clamp_i32(per_replica.max(1)))
        .bind(horizon.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(i64::from(replicas.unwrap_or(0)))
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
