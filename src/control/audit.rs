//! The operators' audit trail (migration 0024): one row per action from the dashboard or the
//! CLI, with the jobs it changed, so that a job's history can name who retried or cancelled it.
//!
//! A change and its record commit together where the change is a job's: the dashboard runs the
//! transition and [`Audit::add_jobs`] in one transaction ([`Audit::record_in`] first for a single
//! job; for a bulk action the action's row is written first and each batch adds its jobs and
//! its count in the batch's own transaction, so an interrupted bulk action says how far it got).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::sql::audit as sql;

/// Where an action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The web dashboard (the actor is a configured operator).
    Dashboard,
    /// A `studio-worker` command (the actor is who ran it).
    Cli,
}

impl Source {
    /// As stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dashboard => "dashboard",
            Source::Cli => "cli",
        }
    }
}

/// An action to record.
#[derive(Debug, Clone)]
pub struct NewAction<'a> {
    /// Who: the operator's configured name, or the CLI's user.
    pub actor: &'a str,
    /// From where.
    pub source: Source,
    /// The dashboard role the actor had (`None` from the CLI).
    pub role: Option<&'a str>,
    /// What: `job.retry`, `job.cancel`, `jobs.retry`, `jobs.cancel`, `kind.pause`,
    /// `kind.resume`, `kind.declare`, `kind.forget`, `quota.set`, `quota.clear`.
    pub action: &'a str,
    /// The kind acted on, if one.
    pub kind: Option<&'a str>,
    /// The job acted on, if one.
    pub job_id: Option<Uuid>,
    /// A bulk action's filter.
    pub filter: Option<Value>,
    /// Rows changed (bulk actions add theirs batch by batch with [`Audit::add_jobs`]).
    pub rows: i64,
    /// Anything else worth knowing (a quota's new limits).
    pub detail: Option<String>,
}

impl<'a> NewAction<'a> {
    /// An action of `actor` from `source`, with nothing else set.
    #[must_use]
    pub fn new(actor: &'a str, source: Source, action: &'a str) -> Self {
        NewAction {
            actor,
            source,
            role: None,
            action,
            kind: None,
            job_id: None,
            filter: None,
            rows: 0,
            detail: None,
        }
    }
}

/// One recorded action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Action {
    /// Its id (increasing).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// `dashboard` or `cli`.
    pub source: String,
    /// The dashboard role.
    pub role: Option<String>,
    /// What.
    pub action: String,
    /// The kind.
    pub kind: Option<String>,
    /// The job.
    pub job_id: Option<Uuid>,
    /// A bulk action's filter.
    pub filter: Option<Value>,
    /// Rows changed.
    pub rows: i64,
    /// Anything else.
    pub detail: Option<String>,
}

/// The audit trail, over a pool whose role is (a member of) `studio_worker`.
#[derive(Debug, Clone)]
pub struct Audit {
    pool: PgPool,
}

impl Audit {
    /// The trail over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Audit { pool }
    }

    /// Record `action` on its own; returns its id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record(&self, action: &NewAction<'_>) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::record_in(&mut conn, action).await
    }

    /// Record `action` inside the caller's transaction `conn`; returns its id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_in(
        conn: &mut PgConnection,
        action: &NewAction<'_>,
    ) -> Result<i64, sqlx::Error> {
        let detail = action
            .detail
            .as_deref()
            .map(|d| d.char_indices().nth(2000).map_or(d, |(end, _)| &d[..end]));
        sqlx::query_scalar(sql::RECORD)
            .bind(action.actor)
            .bind(action.source.as_str())
            .bind(action.role)
            .bind(action.action)
            .bind(action.kind)
            .bind(action.job_id)
            .bind(&action.filter)
            .bind(action.rows)
            .bind(detail)
            .fetch_one(conn)
            .await
    }

    /// List `jobs` as changed by action `id` and add them to its rows, inside the caller's
    /// transaction `conn` (the one that changed them).
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_jobs(
        conn: &mut PgConnection,
        id: i64,
        jobs: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        sqlx::query(sql::ADD_JOBS)
            .bind(id)
            .bind(jobs)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The newest actions before id `before` (`None`: from the newest), at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self, before: Option<i64>, limit: i64) -> Result<Vec<Action>, sqlx::Error> {
        sqlx::query_as(sql::LIST)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// The actions that changed job `job`, oldest first (at most 200).
    ///
    /// # Errors
    /// Database errors.
    pub async fn for_job(&self, job: Uuid) -> Result<Vec<Action>, sqlx::Error> {
        sqlx::query_as(sql::FOR_JOB)
            .bind(job)
            .fetch_all(&self.pool)
            .await
    }
}
