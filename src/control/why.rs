//! "Why isn't this job running?": the one reason that holds now for a job, by the rules the
//! claim applies, in the order a claim meets them (the job's own state first, then its kind,
//! then the cluster's limits, then the queue ahead of it).
//!
//! The database holds every fact except the limits, which live in the workers' configuration
//! (`kinds.<k>.max_running`, `kinds.<k>.rate_limit`, `worker.fairness`,
//! `worker.max_running_per_user`): [`WhyPolicy`] carries them, from the configuration of the
//! process asking (the dashboard's replica, or the CLI's `--config`), so the answer is as true
//! as that configuration is the workers'.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::sql::why as sql;
use crate::config::{Fairness, Settings};
use crate::limits::{RateLimit, Start};

/// The limits of the claim that apply to one kind.
#[derive(Debug, Clone, Default)]
pub struct WhyPolicy {
    /// Claims go round robin over users (`worker.fairness = "fair"`).
    pub fair: bool,
    /// `worker.max_running_per_user` (fair order only), if any.
    pub max_running_per_user: Option<u32>,
    /// `kinds.<k>.max_running`, if any.
    pub max_running: Option<u32>,
    /// `kinds.<k>.rate_limit`, if any.
    pub rate_limit: Option<RateLimit>,
}

impl WhyPolicy {
    /// The limits `settings` give kind `kind`.
    #[must_use]
    pub fn for_kind(settings: &Settings, kind: &str) -> Self {
        let fair = settings.worker.fairness == Fairness::Fair;
        let per_user = settings.worker.max_running_per_user;
        let kind = settings.kinds.get(kind);
        WhyPolicy {
            fair,
            max_running_per_user: (fair && per_user > 0).then_some(per_user),
            max_running: kind.and_then(|k| k.limits.max_running),
            rate_limit: kind.and_then(|k| k.limits.rate_limit),
        }
    }
}

/// The reason a job is not running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// It is not pending: nothing is waiting.
    NotPending {
        /// Its status.
        status: String,
    },
    /// A failed attempt's retry delay: due at `until`.
    RetryBackoff {
        /// When it is due again.
        until: DateTime<Utc>,
        /// Attempts made.
        attempt: i32,
    },
    /// Its `run_at` is in the future.
    Scheduled {
        /// When it is due.
        at: DateTime<Utc>,
    },
    /// Its kind is paused.
    Paused {
        /// The kind.
        kind: String,
        /// Since when.
        since: Option<DateTime<Utc>>,
        /// By whom.
        by: Option<String>,
    },
    /// No live replica serves its kind.
    Unserved {
        /// The kind.
        kind: String,
    },
    /// The kind's cluster-wide running cap is reached.
    KindCap {
        /// The kind.
        kind: String,
        /// Its running jobs.
        running: i64,
        /// The cap.
        cap: u32,
    },
    /// The user's running cap is reached.
    UserCap {
        /// The user.
        user: Uuid,
        /// Their running jobs.
        running: i64,
        /// The cap.
        cap: u32,
    },
    /// The kind's start rate allows no start now; the next is allowed at `until`.
    RateLimited {
        /// The kind.
        kind: String,
        /// When one more start fits.
        until: DateTime<Utc>,
        /// The limit, e.g. `5/s`.
        limit: String,
    },
    /// Other due jobs are claimed first.
    Queued {
        /// Jobs taken before it (fair order: other users' turns and the user's own earlier jobs).
        ahead: i64,
        /// Fair order (round robin over users).
        fair: bool,
    },
    /// Nothing holds it back: the next claim of a replica serving its kind takes it.
    Next,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match self {
            Reason::NotPending { status } => write!(f, "it is not waiting: it is {status}"),
            Reason::RetryBackoff { until, attempt } => write!(
                f,
                "retry backoff: attempt {attempt} failed; it is due again at {}",
                at(until)
            ),
            Reason::Scheduled { at: when } => {
                write!(f, "scheduled: its run_at is {} (in the future)", at(when))
            }
            Reason::Paused { kind, since, by } => {
                write!(f, "its kind {kind} is paused")?;
                if let Some(since) = since {
                    write!(f, " since {}", at(since))?;
                }
                if let Some(by) = by {
                    write!(f, " by {by}")?;
                }
                f.write_str(": `kinds resume` starts it again")
            }
            Reason::Unserved { kind } => write!(
                f,
                "no live replica serves its kind {kind}: start a worker with [kinds.{kind}]"
            ),
            Reason::KindCap { kind, running, cap } => write!(
                f,
                "the running cap of kind {kind} is reached: {running} running, max_running = {cap}"
            ),
            Reason::UserCap { user, running, cap } => write!(
                f,
                "the user's running cap is reached: user {user} has {running} running, max_running_per_user = {cap}"
            ),
            Reason::RateLimited { kind, until, limit } => write!(
                f,
                "the rate limit of kind {kind} ({limit}) is full until {}",
                at(until)
            ),
            Reason::Queued { ahead, fair: true } => write!(
                f,
                "waiting for its fair turn: {ahead} due job(s) are claimed before it (round robin over users)"
            ),
            Reason::Queued { ahead, fair: false } => write!(
                f,
                "queued: {ahead} due job(s) of its kind are claimed before it (priority, then due time)"
            ),
            Reason::Next => f.write_str(
                "nothing holds it back: the next claim of a replica serving its kind takes it",
            ),
        }
    }
}

type Facts = (
    String,
    String,
    Uuid,
    i16,
    DateTime<Utc>,
    i32,
    bool,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
    i64,
    i64,
    i64,
);

/// Why job `id` is not running, as of `now` (`None`: the database's clock), with the limits
/// `policy` gives the job's kind; `None` when there is no such job.
///
/// # Errors
/// Database errors.
pub async fn why(
    pool: &PgPool,
    id: Uuid,
    policy: &(dyn Fn(&str) -> WhyPolicy + Sync),
    now: Option<DateTime<Utc>>,
) -> Result<Option<Reason>, sqlx::Error> {
    let facts: Option<Facts> = sqlx::query_as(sql::FACTS)
        .bind(id)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    let Some((
        status,
        kind,
        user,
        priority,
        run_at,
        attempt,
        has_error,
        now,
        paused_at,
        paused_by,
        replicas,
        kind_running,
        user_running,
    )) = facts
    else {
        return Ok(None);
    };
    if status != "pending" {
        return Ok(Some(Reason::NotPending { status }));
    }
    let policy = policy(&kind);
    if run_at > now {
        return Ok(Some(if attempt > 0 && has_error {
            Reason::RetryBackoff {
                until: run_at,
                attempt,
            }
        } else {
            Reason::Scheduled { at: run_at }
        }));
    }
    if paused_at.is_some() {
        return Ok(Some(Reason::Paused {
            kind,
            since: paused_at,
            by: paused_by,
        }));
    }
    if replicas == 0 {
        return Ok(Some(Reason::Unserved { kind }));
    }
    if let Some(cap) = policy.max_running
        && kind_running >= i64::from(cap)
    {
        return Ok(Some(Reason::KindCap {
            kind,
            running: kind_running,
            cap,
        }));
    }
    if let Some(cap) = policy.max_running_per_user
        && user_running >= i64::from(cap)
    {
        return Ok(Some(Reason::UserCap {
            user,
            running: user_running,
            cap,
        }));
    }
    if let Some(rate) = policy.rate_limit {
        let starts: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(sql::STARTS)
            .bind(&kind)
            .bind(now)
            .bind(rate.period().as_secs_f64())
            .fetch_all(pool)
            .await?;
        let starts: Vec<Start> = starts
            .into_iter()
            .map(|(at, jobs)| Start { at, jobs })
            .collect();
        if rate.room(&starts, now) == 0 {
            return Ok(Some(Reason::RateLimited {
                until: rate.next_start(&starts, now),
                limit: rate.to_string(),
                kind,
            }));
        }
    }
    let ahead: i64 = if policy.fair {
        sqlx::query_scalar(sql::AHEAD_FAIR)
            .bind(id)
            .bind(now)
            .bind(&kind)
            .bind(priority)
            .bind(run_at)
            .bind(user)
            .fetch_one(pool)
            .await?
    } else {
        sqlx::query_scalar(sql::AHEAD_FIFO)
            .bind(id)
            .bind(now)
            .bind(&kind)
            .bind(priority)
            .bind(run_at)
            .fetch_one(pool)
            .await?
    };
    Ok(Some(if ahead > 0 {
        Reason::Queued {
            ahead,
            fair: policy.fair,
        }
    } else {
        Reason::Next
    }))
}
