//! The job queue: typed operations over `public.studio_jobs`.
//!
//! Every transition is one guarded statement (see `sql/`): a running job is only ever changed by
//! the worker that holds its lease, for the attempt it claimed, and a statement that matches no row
//! is reported as [`Error::LeaseLost`], never ignored. The handler never runs inside a database
//! transaction: a claim commits before the job starts.
//!
//! - [`Queue`]: enqueue, the claims (`claim/`: `plan` decides without the database, `mod`
//!   runs the statements, `rate` the start rates inside the claim), a running job's
//!   transitions, the rescue, one job by id.
//! - [`Admin`]: what operators read and do in bulk (lists, stats, `/metrics` gauges, redrive,
//!   prune).
//! - [`user`]: acting as a signed-in user (the Job API); [`refusal`]: the database's refusals
//!   of an insert; `job` and `state`: the model.
//! - `sql/`: every statement, one file per concern.

mod admin;
mod claim;
mod job;
pub mod refusal;
mod sql;
mod state;
pub mod user;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use admin::{
    Admin, JobFilter, KindCount, KindGauges, OldestPending, QueueStats, RedriveFilter, WorkerLoad,
};
pub use claim::{
    ClaimCursor, ClaimOrder, ClaimPolicy, Claimed, claim_begin, claim_statements, hot_statements,
    next_rotation,
};
pub use job::{
    ClaimRequest, ClaimedJob, FailOutcome, Failure, HeldLease, Job, JobEvent, Lease, NewJob,
    Rescued, WorkerId,
};
pub use state::{JobStatus, UnknownStatus};

pub(crate) use refusal::insert_error;

/// Rows per statement of [`Queue::enqueue_bulk`].
pub const BULK_BATCH: usize = 5_000;

/// A bulk enqueue stopped at a failed batch: what was enqueued, and why the rest was not.
#[derive(Debug, thiserror::Error)]
#[error("jobs {} of the input were enqueued; the batch from job {failed_at} failed: {error}", ranges(.enqueued))]
pub struct BulkError {
    /// Ranges of input indices that were enqueued (committed), in order.
    pub enqueued: Vec<std::ops::Range<usize>>,
    /// The ids of the jobs enqueued, in input order (those of `enqueued`).
    pub ids: Vec<Uuid>,
    /// Index of the first job of the first batch that failed.
    pub failed_at: usize,
    /// Why that batch failed.
    #[source]
    pub error: Error,
}

/// Adjacent ranges joined.
fn merge(ranges: Vec<std::ops::Range<usize>>) -> Vec<std::ops::Range<usize>> {
    let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => merged.push(range),
        }
    }
    merged
}

/// `0..5000, 10000..15000` as "0-4999, 10000-14999" ("none" when empty).
fn ranges(ranges: &[std::ops::Range<usize>]) -> String {
    if ranges.is_empty() {
        return "none".to_owned();
    }
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end.saturating_sub(1)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The inserts whose plans tests inspect, their triggers' statements included: name and text
/// (the library's bulk enqueue, the API's create with an idempotency key, and its look-up).
#[doc(hidden)]
#[must_use]
pub fn insert_statements() -> [(&'static str, &'static str); 3] {
    [
        ("enqueue_many", sql::enqueue::ENQUEUE_MANY),
        ("create", sql::user::USER_CREATE),
        ("by_key", sql::user::USER_JOB_BY_KEY),
    ]
}
pub(crate) use sql::inspect::QUEUE_GAUGES as QUEUE_GAUGES_SQL;

/// Errors of queue operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job does not exist (or is not visible to the caller).
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// The job is no longer running under this worker and attempt: its lease expired and it was
    /// rescued, it was cancelled, or another writer moved it. The caller must drop its result.
    #[error(
        "lease lost on job {job_id} (attempt {attempt}): it is no longer running under this worker"
    )]
    LeaseLost {
        /// The job.
        job_id: Uuid,
        /// The attempt this worker held.
        attempt: i32,
    },
    /// The job is in a status that does not allow the operation.
    #[error("job {job_id} cannot be {action}: it is {status}")]
    WrongStatus {
        /// The job.
        job_id: Uuid,
        /// What was attempted, as a past participle ("retried", "cancelled").
        action: &'static str,
        /// The job's current status.
        status: JobStatus,
    },
    /// Enqueue for a user that does not exist in `auth.users` (`None`: one of a batch's users,
    /// which the database does not name to a role that cannot read `auth.users`).
    #[error("unknown user {}: no such row in auth.users", .0.map_or("in batch".to_owned(), |u| u.to_string()))]
    UnknownUser(Option<Uuid>),
    /// The database refused the job's values (a CHECK constraint: kind format, input size, ranges).
    #[error("job rejected: {constraint} ({detail})")]
    InvalidJob {
        /// The violated constraint, e.g. `studio_jobs_input_size`.
        constraint: String,
        /// The database's message.
        detail: String,
    },
    /// A user's insert refused by an admission quota (migration 0016); nothing was inserted.
    #[error(transparent)]
    QuotaExceeded(#[from] refusal::QuotaExceeded),
    /// A kind name the queue cannot hold (see [`crate::config::valid_kind_name`]); nothing
    /// was changed.
    #[error("invalid kind name {0:?}: expected a lowercase letter, then up to 63 of a-z 0-9 _ . -")]
    InvalidKind(String),
    /// The database does not know the job's kind (migration 0017): nothing was inserted.
    #[error(transparent)]
    UnknownKind(#[from] refusal::UnknownKind),
    /// A bulk redrive was asked for jobs that are neither failed nor cancelled.
    #[error("only failed or cancelled jobs can be retried in bulk, not {0} ones")]
    WrongRedriveStatus(JobStatus),
    /// A status read from the database is not one this version knows.
    #[error(transparent)]
    UnknownStatus(#[from] UnknownStatus),
    /// Any other database error (connection loss included; see [`crate::db::is_transient`]).
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Result of queue operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The queue, over a pool whose role is (a member of) `studio_worker`: enqueue, the claims, a
/// running job's transitions under its lease, the rescue of expired leases, and one job by id
/// (read, history, an operator's cancel or retry). Operators' lists, stats, gauges and bulk
/// actions are on [`Admin`] ([`Queue::admin`]).
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
}

impl Queue {
    /// A queue over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Queue { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One round trip to the database.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Enqueue one job; returns its id.
    ///
    /// # Errors
    /// [`Error::UnknownUser`] if the user does not exist, [`Error::UnknownKind`] if the kind is
    /// not known, [`Error::InvalidJob`] if the database refuses the values (kind format, input
    /// over 1 MiB, priority or attempts out of range).
    pub async fn enqueue(&self, job: &NewJob) -> Result<Uuid> {
        let id = Uuid::now_v7();
        if let Some(key) = &job.idempotency_key {
            return self.enqueue_idempotent(id, job, key).await;
        }
        sqlx::query(sql::enqueue::ENQUEUE_ONE)
            .bind(id)
            .bind(job.user_id)
            .bind(&job.kind)
            .bind(&job.input)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, &[job.user_id]))?;
        Ok(id)
    }

    /// Enqueue with an idempotency key: the id of the user's job with that key if there is one
    /// (waiting for a concurrent first insert to commit), else of the new job.
    async fn enqueue_idempotent(&self, id: Uuid, job: &NewJob, key: &str) -> Result<Uuid> {
        let inserted: Option<Uuid> = sqlx::query_scalar(sql::enqueue::ENQUEUE_ONE_IDEMPOTENT)
            .bind(id)
            .bind(job.user_id)
            .bind(&job.kind)
            .bind(&job.input)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| insert_error(e, &[job.user_id]))?;
        if let Some(id) = inserted {
            return Ok(id);
        }
        sqlx::query_scalar(sql::enqueue::JOB_BY_IDEMPOTENCY_KEY)
            .bind(job.user_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// Enqueue many jobs in one statement; returns their ids in input order. All or nothing.
    ///
    /// # Errors
    /// As [`Queue::enqueue`]; one bad job rejects the whole batch.
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Uuid>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
        let users: Vec<Uuid> = jobs.iter().map(|j| j.user_id).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        let inputs: Vec<&Value> = jobs.iter().map(|j| &j.input).collect();
        let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
        let run_ats: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.run_at).collect();
        let max_attempts: Vec<Option<i32>> = jobs.iter().map(|j| j.max_attempts).collect();
        sqlx::query(sql::enqueue::ENQUEUE_MANY)
            .bind(&ids)
            .bind(&users)
            .bind(&kinds)
            .bind(&inputs)
            .bind(&priorities)
            .bind(&run_ats)
            .bind(&max_attempts)
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, &users))?;
        Ok(ids)
    }

    /// Enqueue a large number of jobs quickly: batches of [`BULK_BATCH`] rows, `connections` of
    /// them in flight at once, each batch one statement and one transaction of its own (on this
    /// project's 2-core machine about 35,000 jobs/s on one connection and 70,000 on two).
    /// Returns the ids in input order. Unlike [`Queue::enqueue_many`] this is not all or
    /// nothing: once a batch has failed no other starts, the batches in flight finish, and the
    /// error says which jobs were enqueued.
    ///
    /// # Errors
    /// [`BulkError`]: the first failed batch's error (as [`Queue::enqueue_many`]'s), and the
    /// input ranges and ids that were enqueued.
    pub async fn enqueue_bulk(
        &self,
        jobs: &[NewJob],
        connections: usize,
    ) -> std::result::Result<Vec<Uuid>, BulkError> {
        use futures_util::StreamExt;
        // One future type for every batch (a closure's async block would not name it).
        async fn one(queue: &Queue, (n, batch): (usize, &[NewJob])) -> (usize, Result<Vec<Uuid>>) {
            (n, queue.enqueue_many(batch).await)
        }
        let mut batches = jobs.chunks(BULK_BATCH).enumerate();
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        for next in batches.by_ref().take(connections.max(1)) {
            in_flight.push(one(self, next));
        }
        // Each batch's outcome by its number, as they finish.
        let mut done: Vec<Option<Result<Vec<Uuid>>>> = Vec::new();
        let mut failed = false;
        while let Some((n, result)) = in_flight.next().await {
            failed |= result.is_err();
            if done.len() <= n {
                done.resize_with(n + 1, || None);
            }
            done[n] = Some(result);
            if !failed && let Some(next) = batches.next() {
                in_flight.push(one(self, next));
            }
        }
        let mut ids = Vec::with_capacity(jobs.len());
        let mut enqueued = Vec::new();
        let mut first_failure = None;
        for (n, outcome) in done.into_iter().enumerate() {
            let start = n * BULK_BATCH;
            match outcome {
                Some(Ok(batch_ids)) => {
                    enqueued.push(start..start + batch_ids.len());
                    ids.extend(batch_ids);
                }
                Some(Err(err)) if first_failure.is_none() => first_failure = Some((start, err)),
                // A later failure, or a batch never sent: not enqueued.
                Some(Err(_)) | None => {}
            }
        }
        match first_failure {
            None => Ok(ids),
            Some((failed_at, error)) => Err(BulkError {
                enqueued: merge(enqueued),
                ids,
                failed_at,
                error,
            }),
        }
    }

    /// Extend the leases of `leases` (all held by `worker`) to `lease` from now. Returns the
    /// leases still held; any lease missing from the result was lost.
    ///
    /// The database cancels the renewal once it has run for `within` (waiting for row locks
    /// included): a renewal that late is no longer awaited, and left running it would hold the
    /// locks of every row it renewed, with the next renewals queueing behind it.
    ///
    /// # Errors
    /// Database errors only; 57014 (`query_canceled`) when the renewal took longer than `within`.
    pub async fn heartbeat(
        &self,
        worker: &WorkerId,
        leases: &[(Uuid, i32)],
        lease: Duration,
        now: Option<DateTime<Utc>>,
        within: Duration,
    ) -> Result<Vec<HeldLease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        // Rows are locked in id order by every multi-row statement (heartbeat, completion), so
        // two of them over the same jobs cannot deadlock.
        let mut leases = leases.to_vec();
        leases.sort_unstable();
        let ids: Vec<Uuid> = leases.iter().map(|(id, _)| *id).collect();
        let attempts: Vec<i32> = leases.iter().map(|(_, attempt)| *attempt).collect();
        let mut tx = self
            .pool
            .begin_with(sqlx::AssertSqlSafe(sql::lease::renewal_begin(within)))
            .await?;
        let renewed: sqlx::Result<Vec<(Uuid, bool)>> = sqlx::query_as(sql::lease::HEARTBEAT)
            .bind(&ids)
            .bind(&attempts)
            .bind(lease.as_secs_f64())
            .bind(now)
            .bind(worker.as_str())
            .fetch_all(&mut *tx)
            .await;
        let rows = match renewed {
            Ok(rows) => rows,
            Err(err) => {
                // Roll back now rather than when the connection is next used: the rows this
                // renewal locked before it was cancelled stay locked until then.
                let _ = tx.rollback().await;
                return Err(err.into());
            }
        };
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, cancel_requested)| HeldLease {
                job_id,
                cancel_requested,
            })
            .collect())
    }

    /// Record progress (clamped to 0..=100) and an optional message. Returns whether
    /// cancellation has been requested.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the job is no longer running under this lease.
    pub async fn progress(
        &self,
        lease: &Lease,
        percent: i16,
        message: Option<&str>,
    ) -> Result<bool> {
        let cancel: Option<bool> = sqlx::query_scalar(sql::transition::PROGRESS)
            .bind(lease.job_id)
            .bind(lease.attempt)
            .bind(lease.worker.as_str())
            .bind(percent.clamp(0, 100))
            .bind(message.map(|m| truncate(m, 1024)))
            .fetch_optional(&self.pool)
            .await?;
        cancel.ok_or_else(|| lease_lost(lease))
    }

    /// Mark the job succeeded with `result`.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the job is no longer running under this lease.
    pub async fn complete(&self, lease: &Lease, result: &Value) -> Result<()> {
        let done = self
            .complete_many(&lease.worker, &[(lease.job_id, lease.attempt, result)])
            .await?;
        if done.is_empty() {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    /// Mark many jobs held by `worker` succeeded in one statement. Returns the ids completed;
    /// the others had lost their lease and were left as they were.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn complete_many(
        &self,
        worker: &WorkerId,
        done: &[(Uuid, i32, &Value)],
    ) -> Result<Vec<Uuid>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let mut done = done.to_vec();
        done.sort_unstable_by_key(|(id, attempt, _)| (*id, *attempt)); // lock order: see heartbeat
        let ids: Vec<Uuid> = done.iter().map(|(id, _, _)| *id).collect();
        let attempts: Vec<i32> = done.iter().map(|(_, attempt, _)| *attempt).collect();
        let results: Vec<&Value> = done.iter().map(|(_, _, result)| *result).collect();
        let completed = sqlx::query_scalar(sql::transition::COMPLETE_MANY)
            .bind(&ids)
            .bind(&attempts)
            .bind(&results)
            .bind(worker.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(completed)
    }

    /// Record a failed attempt. The database decides between another attempt, failure and
    /// cancellation (see [`FailOutcome`]).
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the job is no longer running under this lease.
    pub async fn fail(&self, lease: &Lease, failure: &Failure) -> Result<FailOutcome> {
        self.fail_with_detail(lease, failure, None).await
    }

    /// [`Queue::fail`], with what operators need to know beyond the user's message (a stderr
    /// tail, a path, a response body): stored where end users cannot read it.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the job is no longer running under this lease.
    pub async fn fail_with_detail(
        &self,
        lease: &Lease,
        failure: &Failure,
        detail: Option<&str>,
    ) -> Result<FailOutcome> {
        let (retryable, delay, error) = match failure {
            Failure::Retryable { error, delay } => (true, *delay, error.as_str()),
            Failure::Permanent { error } => (false, Duration::ZERO, error.as_str()),
        };
        let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(sql::transition::FAIL)
            .bind(lease.job_id)
            .bind(lease.attempt)
            .bind(lease.worker.as_str())
            .bind(retryable)
            .bind(delay.as_secs_f64())
            .bind(truncate(error, ERROR_LIMIT))
            .bind(detail.map(|d| truncate(d, DETAIL_LIMIT)))
            .fetch_optional(&self.pool)
            .await?;
        let (status, run_at) = row.ok_or_else(|| lease_lost(lease))?;
        Ok(match status.parse::<JobStatus>()? {
            JobStatus::Pending => FailOutcome::Retrying { run_at },
            JobStatus::Cancelled => FailOutcome::Cancelled,
            _ => FailOutcome::Failed,
        })
    }

    /// The worker stopped a running job because its cancellation was requested.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the job is no longer running under this lease.
    pub async fn cancel_running(&self, lease: &Lease, reason: &str) -> Result<()> {
        let done = sqlx::query(sql::transition::CANCEL_RUNNING)
            .bind(lease.job_id)
            .bind(lease.attempt)
            .bind(lease.worker.as_str())
            .bind(truncate(reason, ERROR_LIMIT))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    /// Give a running job back without using up its attempt (the worker is shutting down), as
    /// a pending job with no error and no progress; the history records the requeue. Returns
    /// the status it went to: pending, or cancelled if cancellation was requested.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the job is no longer running under this lease.
    pub async fn requeue(&self, lease: &Lease) -> Result<JobStatus> {
        let status: Option<String> = sqlx::query_scalar(sql::transition::REQUEUE)
            .bind(lease.job_id)
            .bind(lease.attempt)
            .bind(lease.worker.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(status.ok_or_else(|| lease_lost(lease))?.parse()?)
    }

    /// Move up to `limit` running jobs whose lease expired (as of `now`, default the database's
    /// clock) back to pending, or to failed when no attempt is left. Safe to run from every
    /// replica at once.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn rescue_expired(
        &self,
        limit: u32,
        now: Option<DateTime<Utc>>,
    ) -> Result<Vec<Rescued>> {
        // With the claims' planner settings: an ordered walk of the lease index, never a sort
        // of every running job.
        let mut tx = self.pool.begin_with(sql::claim::CLAIM_BEGIN).await?;
        let rescued = sqlx::query_as(sql::lease::RESCUE_EXPIRED)
            .bind(i64::from(limit))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rescued)
    }

    /// One job by id.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such job.
    pub async fn job(&self, id: Uuid) -> Result<Job> {
        sqlx::query_as(sql::job::GET_JOB)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// A job's status history, oldest first.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn events(&self, id: Uuid) -> Result<Vec<JobEvent>> {
        Ok(sqlx::query_as(sql::job::JOB_EVENTS)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Operator's cancel: a pending job is cancelled at once, a running one is asked to stop
    /// (its worker is notified and records `cancelled`).
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::WrongStatus`] if the job has already finished.
    pub async fn cancel(&self, id: Uuid) -> Result<Job> {
        let job: Option<Job> = sqlx::query_as(sql::operator::OPERATOR_CANCEL)
            .bind(id)
            .bind("cancelled by operator")
            .fetch_optional(&self.pool)
            .await?;
        match job {
            Some(job) => Ok(job),
            None => Err(self.wrong_status(id, "cancelled").await),
        }
    }

    /// Operator's retry: a succeeded, failed or cancelled job goes back to pending with at least
    /// one attempt left.
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::WrongStatus`] if the job is pending or running.
    pub async fn retry(&self, id: Uuid) -> Result<Job> {
        let job: Option<Job> = sqlx::query_as(sql::operator::OPERATOR_RETRY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match job {
            Some(job) => Ok(job),
            None => Err(self.wrong_status(id, "retried").await),
        }
    }

    /// Explain why a guarded operator statement matched nothing.
    async fn wrong_status(&self, id: Uuid, action: &'static str) -> Error {
        match self.job(id).await {
            Ok(job) => Error::WrongStatus {
                job_id: id,
                action,
                status: job.status,
            },
            Err(err) => err,
        }
    }
}

/// Longest error text stored (the column's CHECK allows 8192 characters).
const ERROR_LIMIT: usize = 8000;
/// Longest operator detail stored (the column's CHECK allows 16 KiB).
const DETAIL_LIMIT: usize = 16_000;

fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id,
        attempt: lease.attempt,
    }
}

/// At most `limit` characters of `text`, cut on a character boundary, without NUL characters
/// (PostgreSQL text cannot hold them; a program's stderr can).
fn truncate(text: &str, limit: usize) -> String {
    let text = match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    };
    text.replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_on_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("a\0b", 10), "ab");
    }

    #[test]
    fn worker_ids_are_unique_per_start() {
        assert_ne!(WorkerId::generate(), WorkerId::generate());
    }

    #[test]
    fn worker_ids_say_nothing_about_the_host() {
        // Users read `locked_by` (0023): the same form the migration gives stored identities.
        let id = WorkerId::generate();
        let hex = id.as_str().strip_prefix("w-").unwrap();
        assert_eq!(hex.len(), 12, "{id}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{id}"
        );
        let host = WorkerId::host();
        assert!(host.is_empty() || !id.as_str().contains(&host), "{id}");
    }
}
