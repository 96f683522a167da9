//! The job model: what is enqueued, what a row holds, what a worker holds while it runs one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::JobStatus;

/// Identity of one worker process, unique per start and opaque: `w-` and 12 random hex digits
/// (migration 0023). Written to `locked_by` and the history's `worker`, which users may read,
/// so it says nothing about hosts or processes; the worker's start-up log line maps it to its
/// host and pid. Used to fence every transition.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// A fresh identity for this process start.
    pub fn generate() -> Self {
        let random = Uuid::new_v4().simple().to_string();
        WorkerId(format!("w-{}", &random[..12]).into())
    }

    /// This machine's name (`$HOSTNAME`, else the kernel's; empty when neither is known), for
    /// operators' logs and records, never stored where users read.
    pub fn host() -> String {
        std::env::var("HOSTNAME")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_default()
    }

    /// The identity as stored in `locked_by`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({})", self.0)
    }
}

/// A job to enqueue on behalf of a user.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Owner (a row in `auth.users`).
    pub user_id: Uuid,
    /// Job kind, e.g. `render`; selects the executor.
    pub kind: String,
    /// Input document passed to the executor.
    pub input: Value,
    /// Higher runs first (-100..=100).
    pub priority: i16,
    /// Not before this time (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed (`None`: the kind's `max_attempts` as the database knows it, else 3;
    /// migration 0021).
    pub max_attempts: Option<i32>,
    /// Idempotency key, unique per user: enqueueing again with the same key returns the first
    /// job's id and creates nothing. Single enqueues only ([`super::Queue::enqueue_many`]
    /// ignores it).
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job with default priority, due now, default attempts.
    pub fn new(user_id: Uuid, kind: impl Into<String>, input: Value) -> Self {
        NewJob {
            user_id,
            kind: kind.into(),
            input,
            priority: 0,
            run_at: None,
            max_attempts: None,
            idempotency_key: None,
        }
    }

    /// Set the priority (higher runs first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Schedule the job for later.
    pub fn run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    /// Set the number of attempts allowed.
    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Set an idempotency key (see [`NewJob::idempotency_key`]).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// A full job row.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Job {
    /// Job id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Input document.
    pub input: Value,
    /// Current status.
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: i16,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// Attempts used so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Progress of the current attempt, 0..=100.
    pub progress: i16,
    /// Latest progress message.
    pub progress_message: Option<String>,
    /// Result document of a succeeded job.
    pub result: Option<Value>,
    /// Why the last attempt did not succeed.
    pub error: Option<String>,
    /// What operators need beyond `error` (stderr tail, paths, response bodies); end users
    /// cannot read it.
    pub error_detail: Option<String>,
    /// Worker holding the lease (running jobs only).
    pub locked_by: Option<String>,
    /// When the lease runs out unless renewed (running jobs only).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When cancellation was requested.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change made through the queue.
    pub updated_at: DateTime<Utc>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One status transition from `studio_job_events`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct JobEvent {
    /// Event id (increasing).
    pub id: i64,
    /// The job.
    pub job_id: Uuid,
    /// The job's owner.
    pub user_id: Uuid,
    /// Status before.
    #[sqlx(try_from = "String")]
    pub from_status: JobStatus,
    /// Status after.
    #[sqlx(try_from = "String")]
    pub to_status: JobStatus,
    /// Attempt number after the transition.
    pub attempt: i32,
    /// Worker involved, if any.
    pub worker: Option<String>,
    /// Error or reason, if any.
    pub message: Option<String>,
    /// Operators' detail beyond `message`, if any (end users cannot read it).
    pub detail: Option<String>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// A job this worker has claimed and now runs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    /// Job id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Input document.
    pub input: Value,
    /// Priority.
    pub priority: i16,
    /// When it became due.
    pub run_at: DateTime<Utc>,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The lease's current expiry.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether cancellation was already requested.
    pub cancel_requested: bool,
}

impl ClaimedJob {
    /// The lease that fences this attempt's transitions.
    pub fn lease(&self, worker: &WorkerId) -> Lease {
        Lease {
            job_id: self.id,
            attempt: self.attempt,
            worker: worker.clone(),
        }
    }
}

/// Proof of ownership of one attempt of a running job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub job_id: Uuid,
    /// The attempt claimed.
    pub attempt: i32,
    /// The worker that claimed it.
    pub worker: WorkerId,
}

/// What to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The claiming worker.
    pub worker: &'a WorkerId,
    /// Kinds this worker can run; other jobs are left untouched.
    pub kinds: &'a [String],
    /// At most this many jobs (the worker's free capacity).
    pub limit: u32,
    /// Lease length; renewed by heartbeats.
    pub lease: Duration,
    /// Database time override for tests (`None`: the database's `now()`).
    pub now: Option<DateTime<Utc>>,
}

/// How an attempt failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth another attempt after `delay`, if any is left.
    Retryable {
        /// What went wrong.
        error: String,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// Retrying cannot help (bad input, unknown kind, 4xx): fail now.
    Permanent {
        /// What went wrong.
        error: String,
    },
}

/// Where a failed attempt left the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to pending, due again at the given time.
    Retrying {
        /// Next attempt not before this time.
        run_at: DateTime<Utc>,
    },
    /// Failed for good.
    Failed,
    /// Cancellation had been requested, so it ended cancelled.
    Cancelled,
}

/// State of a lease after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    /// The job.
    pub job_id: Uuid,
    /// Whether its owner asked for cancellation.
    pub cancel_requested: bool,
}

/// A running job whose lease expired and that was moved on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Rescued {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Where it went: pending (another attempt), failed (none left) or cancelled.
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// The worker that had stopped renewing the lease.
    pub previous_worker: String,
}
