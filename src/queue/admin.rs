//! The operators' handle, [`Admin`]: what the CLI, the dashboard and `/metrics` read (job
//! lists, stats, gauges) and their bulk actions (retry or cancel a list of jobs, redrive, prune),
//! apart from the worker's transitions on [`Queue`]. Every change goes through the same guarded
//! statements (and history triggers) as the daemon's; cancelling or retrying one job by id is
//! [`Queue::cancel`] and [`Queue::retry`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Error, Job, JobStatus, Queue, Result, sql};

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this user's jobs.
    pub user: Option<Uuid>,
    /// At most this many (newest first).
    pub limit: i64,
}

/// Which finished jobs a bulk redrive moves back to pending.
#[derive(Debug, Clone)]
pub struct RedriveFilter {
    /// Failed or cancelled (others are refused: [`Error::WrongRedriveStatus`]).
    pub status: JobStatus,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs that finished at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs whose error or error detail matches this `LIKE` pattern (case-insensitive).
    pub error_like: Option<String>,
}

/// A snapshot of the queue for operators.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    /// Job counts by kind and status.
    pub counts: Vec<KindCount>,
    /// Age of the oldest due pending job, by kind.
    pub oldest_pending: Vec<OldestPending>,
    /// Running jobs per worker.
    pub workers: Vec<WorkerLoad>,
}

/// Jobs of one kind in one status.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct KindCount {
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// How many.
    pub count: i64,
}

/// The oldest due pending job of a kind.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct OldestPending {
    /// Kind.
    pub kind: String,
    /// Seconds since it became due.
    pub age_seconds: f64,
}

/// One kind's gauges for `/metrics`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KindGauges {
    /// Kind.
    pub kind: String,
    /// Pending jobs (due or not).
    pub pending: i64,
    /// Running jobs.
    pub running: i64,
    /// Seconds since the oldest due pending job became due (0: none is due).
    pub oldest_pending_seconds: f64,
    /// Paused (`kinds pause`): no worker claims its jobs.
    pub paused: bool,
    /// Pending jobs that are due (`/metrics` tells unserved kinds from it, without a second
    /// scan of the queue).
    pub due_pending: i64,
}

/// What one worker is running.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct WorkerLoad {
    /// Worker identity (`locked_by`).
    pub worker: String,
    /// Running jobs.
    pub running: i64,
    /// Start of its oldest running attempt.
    pub oldest_started_at: Option<DateTime<Utc>>,
}

/// Operators' reads and bulk actions, over a pool whose role is (a member of) `studio_worker`.
#[derive(Debug, Clone)]
pub struct Admin {
    pool: PgPool,
}

impl Queue {
    /// The operators' handle over the same pool.
    #[must_use]
    pub fn admin(&self) -> Admin {
        Admin::new(self.pool.clone())
    }
}

impl Admin {
    /// The operators' handle over `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Admin { pool }
    }

    /// [`Queue::retry`] of every finished job among `ids`, inside the caller's transaction
    /// `conn` (the dashboard records its audit row in the same one). Returns the ids moved.
    ///
    /// # Errors
    /// Database errors.
    pub async fn retry_ids_in(conn: &mut sqlx::PgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable(); // lock order: see heartbeat
        Ok(sqlx::query_scalar(sql::operator::OPERATOR_RETRY_IDS)
            .bind(&ids)
            .fetch_all(conn)
            .await?)
    }

    /// [`Queue::cancel`] of every pending or running job among `ids` (a running job already
    /// asked to stop is left as it is), inside the caller's transaction `conn`. Returns the ids
    /// changed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn cancel_ids_in(conn: &mut sqlx::PgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable(); // lock order: see heartbeat
        Ok(sqlx::query_scalar(sql::operator::OPERATOR_CANCEL_IDS)
            .bind(&ids)
            .bind("cancelled by operator")
            .fetch_all(conn)
            .await?)
    }

    /// The database's clock now: pass it as `started` to every [`Admin::redrive_batch`] of one
    /// run.
    ///
    /// # Errors
    /// Database errors.
    pub async fn database_now(&self) -> Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar(sql::operator::DB_NOW)
            .fetch_one(&self.pool)
            .await?)
    }

    /// How many jobs match `filter` (and were last changed before `started`).
    ///
    /// # Errors
    /// [`Error::WrongRedriveStatus`], database errors.
    pub async fn redrivable(&self, filter: &RedriveFilter, started: DateTime<Utc>) -> Result<i64> {
        Ok(sqlx::query_scalar(sql::operator::REDRIVABLE)
            .bind(redrive_status(filter.status)?)
            .bind(filter.kind.as_deref())
            .bind(filter.since)
            .bind(filter.error_like.as_deref())
            .bind(started)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Retry at most `batch` jobs matching `filter` that were last changed before `started`
    /// (so a job retried in this run and finished again is not taken twice), through the same
    /// transition as [`Queue::retry`]. Returns how many moved: call again until it returns
    /// less than `batch`.
    ///
    /// # Errors
    /// [`Error::WrongRedriveStatus`], database errors.
    pub async fn redrive_batch(
        &self,
        filter: &RedriveFilter,
        started: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64> {
        let moved = sqlx::query(sql::operator::REDRIVE_BATCH)
            .bind(redrive_status(filter.status)?)
            .bind(filter.kind.as_deref())
            .bind(filter.since)
            .bind(filter.error_like.as_deref())
            .bind(started)
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(moved.rows_affected())
    }

    /// Jobs matching `filter`, newest first.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        Ok(sqlx::query_as(sql::inspect::LIST_JOBS)
            .bind(filter.status.map(JobStatus::as_str))
            .bind(filter.kind.as_deref())
            .bind(filter.user)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Queue depth by kind (pending and running jobs and how long the oldest due one has
    /// waited) and whether it is paused, for kinds with pending or running jobs and paused
    /// kinds: one statement, cheap enough per scrape.
    ///
    /// # Errors
    /// Database errors.
    pub async fn gauges(&self) -> Result<Vec<KindGauges>> {
        let rows: Vec<(String, i64, i64, f64, bool, i64)> =
            sqlx::query_as(sql::inspect::QUEUE_GAUGES)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, pending, running, oldest, paused, due)| KindGauges {
                kind,
                pending,
                running,
                oldest_pending_seconds: oldest,
                paused,
                due_pending: due,
            })
            .collect())
    }

    /// Counts by kind and status, oldest pending age by kind, running jobs per worker.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn stats(&self) -> Result<QueueStats> {
        let counts = sqlx::query_as(sql::inspect::COUNT_BY_KIND_STATUS)
            .fetch_all(&self.pool)
            .await?;
        let oldest_pending = sqlx::query_as(sql::inspect::OLDEST_PENDING)
            .fetch_all(&self.pool)
            .await?;
        let workers = sqlx::query_as(sql::inspect::RUNNING_BY_WORKER)
            .fetch_all(&self.pool)
            .await?;
        Ok(QueueStats {
            counts,
            oldest_pending,
            workers,
        })
    }

    /// How many jobs finished more than `older_than` ago: what pruning would delete now.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn prunable(&self, older_than: Duration) -> Result<i64> {
        Ok(sqlx::query_scalar(sql::prune::PRUNABLE)
            .bind(older_than.as_secs_f64())
            .fetch_one(&self.pool)
            .await?)
    }

    /// Delete at most `batch` jobs that finished more than `older_than` ago (never a pending or
    /// running one); their history goes with them. Returns how many were deleted: call again
    /// until it returns less than `batch`.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn prune_batch(&self, older_than: Duration, batch: i64) -> Result<u64> {
        let deleted = sqlx::query(sql::prune::PRUNE_BATCH)
            .bind(older_than.as_secs_f64())
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }
}

fn redrive_status(status: JobStatus) -> Result<&'static str> {
    match status {
        JobStatus::Failed | JobStatus::Cancelled => Ok(status.as_str()),
        other => Err(Error::WrongRedriveStatus(other)),
    }
}
