//! Acting as a signed-in user: one transaction as role `authenticated` with the verified JWT
//! claims in `request.jwt.claims`, exactly as PostgREST runs each Data API request.
//!
//! This is the one production place that enters a user's identity. The row level security
//! policies of the migrations decide what every statement here may see and do; nothing in this
//! module checks ownership itself. A job of another user is simply not there ([`Error::NotFound`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Error, JobEvent, JobStatus, Result, refusal, sql};

/// A job as its owner sees it through the API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserJob {
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
    /// When cancellation was requested.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// The service that created the job for the user, if one did.
    pub created_by_service: Option<String>,
}

/// A job a user asks for.
#[derive(Debug, Clone)]
pub struct UserNewJob {
    /// Kind.
    pub kind: String,
    /// Input document.
    pub input: Value,
    /// Higher runs first (-100..=100).
    pub priority: i16,
    /// Not before this time (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Idempotency key: a second create with the same key returns the first job.
    pub idempotency_key: Option<String>,
}

/// What a create did.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new job.
    New(UserJob),
    /// The user already had a job with this idempotency key: that job, unchanged.
    Existing(UserJob),
}

/// Filters of a user's job list (keyset pagination on `(created_at, id)`, newest first).
#[derive(Debug, Clone, Default)]
pub struct UserJobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only these kinds (a service token's), when set.
    pub kinds: Option<Vec<String>>,
    /// Only jobs strictly older than this `(created_at, id)`.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many.
    pub limit: i64,
}

/// One transaction acting as a user. Dropped without [`UserTx::commit`], it rolls back.
#[derive(Debug)]
pub struct UserTx {
    tx: Transaction<'static, Postgres>,
}

impl UserTx {
    /// Begin a transaction as role `authenticated` with `claims` (already verified; must hold
    /// `sub` and `role`) in `request.jwt.claims`. `service` names the service token acting for
    /// the user; jobs created in this transaction record it.
    ///
    /// # Errors
    /// Database errors, e.g. 42501 when the connecting role is not a member of `studio_api`.
    pub async fn begin(pool: &PgPool, claims: &Value, service: Option<&str>) -> Result<UserTx> {
        let claims = claims.to_string();
        let service = service.unwrap_or("");
        // One round trip: BEGIN and the settings as one simple query, the values dollar-quoted.
        // Text holding `$` (possible in user metadata) takes the bound-parameter path instead,
        // so no value can ever close its quote.
        if let (Some(claims_literal), Some(service_literal)) =
            (dollar_quoted(&claims), dollar_quoted(service))
        {
            let statement = sql::user::user_begin(&claims_literal, &service_literal);
            return Ok(UserTx {
                tx: pool.begin_with(sqlx::AssertSqlSafe(statement)).await?,
            });
        }
        let mut tx = pool.begin().await?;
        sqlx::query(sql::user::USER_SETTINGS)
            .bind(claims)
            .bind(service)
            .execute(&mut *tx)
            .await?;
        Ok(UserTx { tx })
    }

    /// Commit.
    ///
    /// # Errors
    /// Database errors.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Create one of the user's jobs, or return the one made earlier with the same idempotency
    /// key (waiting for it if its transaction is still open).
    ///
    /// # Errors
    /// [`Error::InvalidJob`] when the database refuses the values, [`Error::UnknownUser`] when
    /// the claims' user does not exist.
    pub async fn create(&mut self, job: &UserNewJob) -> Result<Created> {
        let created: Option<UserJob> = sqlx::query_as(sql::user::USER_CREATE)
            .bind(Uuid::now_v7())
            .bind(&job.kind)
            .bind(&job.input)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.idempotency_key.as_deref())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(refusal::user_insert_error)?;
        if let Some(created) = created {
            return Ok(Created::New(created));
        }
        let key = job.idempotency_key.as_deref().unwrap_or_default();
        let existing: Option<UserJob> = sqlx::query_as(sql::user::USER_JOB_BY_KEY)
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        // The conflict was on this user's key, so the row exists unless it was deleted since.
        existing
            .map(Created::Existing)
            .ok_or(Error::NotFound(Uuid::nil()))
    }

    /// One of the user's jobs.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it does not exist or belongs to someone else.
    pub async fn job(&mut self, id: Uuid) -> Result<UserJob> {
        sqlx::query_as(sql::user::USER_JOB)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// The user's jobs, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&mut self, filter: &UserJobFilter) -> Result<Vec<UserJob>> {
        let (before_at, before_id) = filter.before.unzip();
        Ok(sqlx::query_as(sql::user::USER_LIST)
            .bind(filter.status.map(|s| s.to_string()))
            .bind(filter.kind.as_deref())
            .bind(before_at)
            .bind(before_id)
            .bind(filter.limit)
            .bind(filter.kinds.as_deref())
            .fetch_all(&mut *self.tx)
            .await?)
    }

    /// A job's history after event `after` (0: from the start), oldest first. Empty for another
    /// user's job.
    ///
    /// # Errors
    /// Database errors.
    pub async fn events(&mut self, job: Uuid, after: i64) -> Result<Vec<JobEvent>> {
        Ok(sqlx::query_as(sql::user::USER_EVENTS)
            .bind(job)
            .bind(after)
            .fetch_all(&mut *self.tx)
            .await?)
    }

    /// Cancel one of the user's jobs with `public.cancel_studio_job` (pending: cancelled now;
    /// running: cancellation requested).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a job that is not the user's, [`Error::WrongStatus`] for a
    /// finished one.
    pub async fn cancel(&mut self, id: Uuid) -> Result<UserJob> {
        let job = self.job(id).await?;
        if job.status.is_terminal() {
            return Err(wrong_status(id, job.status));
        }
        let cancelled = sqlx::query_as(sql::user::USER_CANCEL)
            .bind(id)
            .fetch_one(&mut *self.tx)
            .await;
        match cancelled {
            Ok(job) => Ok(job),
            Err(err) => Err(refusal::cancel_error(err, id)),
        }
    }
}

/// `text` as a dollar-quoted SQL literal, or `None` when it holds `$` or NUL (then it must be
/// bound as a parameter). Without `$` in the text, nothing in it can end the quote.
fn dollar_quoted(text: &str) -> Option<String> {
    (!text.contains(['$', '\0'])).then(|| format!("$studio${text}$studio$"))
}

fn wrong_status(job_id: Uuid, status: JobStatus) -> Error {
    Error::WrongStatus {
        job_id,
        action: "cancelled",
        status,
    }
}

/// Whether the pool's role may act as users (`set role authenticated`), checked at start-up so
/// that a missing `studio_api` grant fails there rather than on every request.
///
/// # Errors
/// 42501 when the role is not a member of `authenticated` (through `studio_api`).
pub async fn check_can_act_as_users(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(sql::user::USER_SETTINGS)
        .bind("{}")
        .bind("")
        .execute(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dollar_free_text_is_inlined() {
        assert_eq!(
            dollar_quoted(r#"{"sub":"x","name":"O'Brien \\ "}"#).as_deref(),
            Some(r#"$studio${"sub":"x","name":"O'Brien \\ "}$studio$"#)
        );
        assert_eq!(dollar_quoted("a$studio$b"), None);
        assert_eq!(dollar_quoted("ends with $"), None);
        assert_eq!(dollar_quoted("nul\0"), None);
    }
}
