//! What an attempt came to, and the one step that observes it once the completer wrote it:
//! metrics, the log line, and forgetting the attempt in flight. Every attempt passes through
//! [`observe`] exactly once, whatever it came to, so a feature that must see every outcome
//! hooks in here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::{error, info, warn};

use super::Shared;
use crate::queue::{self, Failure, JobStatus, Lease};

/// What the attempt came to, before it is written.
pub(crate) enum Outcome {
    /// A result.
    Succeeded(Value),
    /// A failed attempt: the user's message in the failure, the operators' detail beside it.
    Failed(Failure, Option<String>),
    /// Cancelled by its owner or an operator.
    Cancelled,
    /// Put back without using the attempt (shutdown), whether it started or not.
    Requeue,
    /// The worker killed the job before its unrenewed lease could expire: recorded as a failed
    /// attempt (retried like a rescued one), by the worker itself while its fence still holds.
    GiveUp,
    /// The lease is someone else's now: nothing is written.
    Abandon,
}

impl Outcome {
    /// What the attempt came to, without its data (kept for observing after the write).
    pub(crate) fn ended(&self) -> Ended {
        match self {
            Outcome::Succeeded(_) => Ended::Succeeded,
            Outcome::Failed(..) => Ended::Failed,
            Outcome::Cancelled => Ended::Cancelled,
            Outcome::Requeue => Ended::Requeued,
            Outcome::GiveUp => Ended::GivenUp,
            Outcome::Abandon => Ended::Abandoned,
        }
    }
}

/// [`Outcome`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    Failed,
    Cancelled,
    Requeued,
    GivenUp,
    Abandoned,
}

impl Ended {
    /// The `outcome` label of `studio_job_duration_seconds`.
    fn label(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::Failed => "failed",
            Ended::Cancelled => "cancelled",
            Ended::Requeued => "requeued",
            Ended::GivenUp => "given_up",
            Ended::Abandoned => "abandoned",
        }
    }
}

/// What the database holds after the outcome was written.
pub(crate) enum Written {
    /// The job moved to `to` (`retry_at` when it went back to pending for another attempt).
    Moved {
        to: JobStatus,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The lease was gone before the write: nothing was recorded.
    LeaseLost,
    /// Nothing to write (abandoned: the new owner or the rescuer decides).
    Nothing,
    /// The write failed for good.
    Failed(queue::Error),
}

/// Observe an attempt's end: exactly once per attempt. `ended` is what the attempt came to;
/// `error` is the operators' account of a failure; `elapsed` is how long it ran (none if it
/// never started).
pub(crate) fn observe(
    shared: &Shared,
    lease: &Lease,
    kind: &str,
    ended: Ended,
    written: &Written,
    error: Option<&str>,
    elapsed: Option<Duration>,
) {
    if let Some(elapsed) = elapsed {
        metrics::histogram!("studio_job_duration_seconds", "kind" => kind.to_owned(), "outcome" => ended.label())
            .record(elapsed.as_secs_f64());
    }
    let count = |counter: &'static str| {
        metrics::counter!(counter, "kind" => kind.to_owned()).increment(1);
    };
    let error = error.unwrap_or_default();
    match written {
        Written::Moved { to, retry_at } => match (ended, to) {
            (_, JobStatus::Succeeded) => {
                count("studio_jobs_succeeded_total");
                info!(job.state.to = %to, "job succeeded");
            }
            (Ended::Requeued, _) => info!(job.state.to = %to, "job requeued at shutdown"),
            (Ended::GivenUp, JobStatus::Pending) => {
                count("studio_jobs_lease_lost_total");
                count("studio_jobs_retried_total");
                warn!(job.state.to = %to, retry_at = ?retry_at, error = error, "attempt given up; will retry");
            }
            (_, JobStatus::Pending) => {
                count("studio_jobs_retried_total");
                warn!(job.state.to = %to, retry_at = ?retry_at, error = error, "attempt failed; will retry");
            }
            (_, JobStatus::Cancelled) => {
                count("studio_jobs_cancelled_total");
                info!(job.state.to = %to, "job cancelled");
            }
            (_, _) => {
                count("studio_jobs_failed_total");
                warn!(job.state.to = %to, error = error, "job failed");
            }
        },
        Written::LeaseLost => {
            count("studio_jobs_lease_lost_total");
            warn!("lease lost before the outcome was written; it was dropped");
        }
        Written::Nothing => {
            count("studio_jobs_lease_lost_total");
            warn!("lease lost: result dropped; the job's new owner or the rescuer decides");
        }
        Written::Failed(err) => {
            error!(error.message = %err, error.cause_chain = ?err, "could not record the job's outcome");
        }
    }
    shared.inflight.remove(lease.job_id, lease.attempt);
}
