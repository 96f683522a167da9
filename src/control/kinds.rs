//! Known kinds and the replicas that serve them (migration 0017).
//!
//! A job can only be inserted for a *known* kind; the database refuses any other with
//! [`UNKNOWN_KIND_SQLSTATE`], whoever inserts it (the refusal, [`UnknownKind`], is a queue fact:
//! `queue::refusal`). A kind becomes known when an operator declares
//! it ([`Kinds::declare`], ahead of its workers) or when a replica serving it starts
//! ([`Kinds::register`]); it stays known across restarts and scale-to-zero, and stops being known
//! only when an operator forgets it ([`Kinds::forget`], refused while a live replica serves it).
//!
//! A replica's registration lives until its `fresh_until` (it refreshes it on its rescue tick
//! and deletes it on graceful shutdown). A kind with due pending jobs and no live replica is
//! *unserved* ([`KindServing::unserved`]): `kinds`, `/metrics` and the replicas' logs say so.
//!
//! Concurrency: [`Kinds::forget`] and [`Kinds::register`] take the kind's advisory lock
//! (`pg_advisory_xact_lock(hashtext('studio_kinds'), hashtext(kind))`) first, and forget counts
//! live replicas in a later statement, so a registration either committed before that count
//! (forget is refused) or runs after the forget (and makes the kind known again): a served kind
//! is never left unknown. 0017's header predates this and says registration takes no lock.
//!
//! The refusal tells whoever inserts whether a kind name exists; accepted, as kind names are not
//! secrets (nothing else about the kinds or their replicas is readable by users).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::sql::kinds as sql;
use crate::config::checked_kind_name;
use crate::limits::RateLimit;
use crate::queue::WorkerId;

/// How long a replica's registration outlives its last refresh, in refresh intervals: a replica
/// that misses two refreshes in a row (a slow database, a pause) still counts as serving.
pub const FRESH_FOR_INTERVALS: u32 = 3;

/// The refusal of an insert of an unknown kind: a queue fact, re-exported here beside the
/// registry that decides what is known.
pub use crate::queue::refusal::{UNKNOWN_KIND_SQLSTATE, UnknownKind};

pub use super::{Error, Result};

/// Whether a kind is known and served, for `kinds` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct KindServing {
    /// Kind.
    pub kind: String,
    /// Jobs of it may be inserted.
    pub known: bool,
    /// Live replicas serving it.
    pub replicas: i64,
    /// Pending jobs that are due.
    pub due_pending: i64,
    /// Due pending jobs and no live replica: they wait until one starts.
    pub unserved: bool,
}

/// A kind's registration, without its jobs: for `/metrics`, which counts the jobs once, in the
/// queue's gauges.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KindReplicas {
    /// Kind.
    pub kind: String,
    /// Jobs of it may be inserted.
    pub known: bool,
    /// Live replicas serving it.
    pub replicas: i64,
}

/// The kind registry, over a pool whose role is (a member of) `studio_worker`.
#[derive(Debug, Clone)]
pub struct Kinds {
    pool: PgPool,
}

fn checked(kind: &str) -> Result<&str> {
    checked_kind_name(kind, Error::InvalidKind)
}

impl Kinds {
    /// The registry over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Kinds { pool }
    }

    /// Make `kind` known ahead of its workers. Returns `false` when it was already known.
    ///
    /// # Errors
    /// [`Error::InvalidKind`] (nothing changed), database errors.
    pub async fn declare(&self, kind: &str, declared_by: Option<&str>) -> Result<bool> {
        self.declare_with(kind, declared_by, None).await
    }

    /// [`Kinds::declare`], also stating the attempts of the kind's jobs whose writers give none
    /// (migration 0021): `Some` sets them (on a known kind too), `None` leaves them as they are.
    ///
    /// # Errors
    /// [`Error::InvalidKind`] (nothing changed), database errors.
    pub async fn declare_with(
        &self,
        kind: &str,
        declared_by: Option<&str>,
        max_attempts: Option<i32>,
    ) -> Result<bool> {
        let row: Option<bool> = sqlx::query_scalar(sql::DECLARE)
            .bind(checked(kind)?)
            .bind(declared_by)
            .bind(max_attempts)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row == Some(true))
    }

    /// Make `kind` unknown: new jobs of it are refused from now on (its existing jobs stay).
    /// Returns `false` when it was not known.
    ///
    /// # Errors
    /// [`Error::Served`] while a live replica serves it (nothing changed), [`Error::InvalidKind`],
    /// database errors.
    pub async fn forget(&self, kind: &str) -> Result<bool> {
        let kind = checked(kind)?;
        // Under the kind's lock, in statements of their own: a registration either committed
        // before the count (forget is refused) or runs after the forget (the kind is known again).
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::READ_COMMITTED).execute(&mut *tx).await?;
        sqlx::query(sql::LOCK_KIND)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        let replicas: i64 = sqlx::query_scalar(sql::FORGET_LIVE)
            .bind(kind)
            .fetch_one(&mut *tx)
            .await?;
        if replicas > 0 {
            return Err(Error::Served {
                kind: kind.to_owned(),
                replicas,
            });
        }
        let forgotten: bool = sqlx::query_scalar(sql::FORGET)
            .bind(kind)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(forgotten)
    }

    /// Every known kind, by name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn known(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(sql::KNOWN).fetch_all(&self.pool).await?)
    }

    /// Record that `worker` serves `kinds` (which become known) for `fresh_for` from now; also
    /// deletes the expired rows of replicas that died. Call it again before `fresh_for` is over.
    /// Leaves the kinds' attempts as they are (see [`Kinds::register_with_limits`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn register(
        &self,
        worker: &WorkerId,
        kinds: &[String],
        fresh_for: Duration,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::register_in(&mut tx, worker, kinds, fresh_for).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Kinds::register`], also stating each kind's attempts for jobs whose writers give none
    /// (`max_attempts[i]` for `kinds[i]`; `None`: the database's default, 3): what a replica
    /// does at start and at every refresh, so the database holds what the replicas run with.
    ///
    /// # Errors
    /// Database errors.
    pub async fn register_with_limits(
        &self,
        worker: &WorkerId,
        kinds: &[String],
        max_attempts: &[Option<i32>],
        fresh_for: Duration,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::register_statement(&mut tx, worker, kinds, Some(max_attempts), fresh_for).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Kinds::register`] inside the caller's transaction, `conn`, which must be at its start
    /// (the isolation level is set first): the kinds stay locked against [`Kinds::forget`] until
    /// it ends. Tests use it to hold a registration open.
    ///
    /// # Errors
    /// Database errors.
    pub async fn register_in(
        conn: &mut PgConnection,
        worker: &WorkerId,
        kinds: &[String],
        fresh_for: Duration,
    ) -> Result<()> {
        Self::register_statement(conn, worker, kinds, None, fresh_for).await
    }

    /// Lock `kinds` and register them; `max_attempts` stated when given.
    async fn register_statement(
        conn: &mut PgConnection,
        worker: &WorkerId,
        kinds: &[String],
        max_attempts: Option<&[Option<i32>]>,
        fresh_for: Duration,
    ) -> Result<()> {
        let attempts: Vec<Option<i32>> = match max_attempts {
            Some(given) => kinds
                .iter()
                .enumerate()
                .map(|(i, _)| given.get(i).copied().flatten())
                .collect(),
            None => vec![None; kinds.len()],
        };
        sqlx::query(sql::READ_COMMITTED).execute(&mut *conn).await?;
        sqlx::query(sql::LOCK_KINDS)
            .bind(kinds)
            .execute(&mut *conn)
            .await?;
        sqlx::query(sql::REGISTER)
            .bind(kinds)
            .bind(worker.as_str())
            .bind(fresh_for.as_secs_f64())
            .bind(&attempts)
            .bind(max_attempts.is_some())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// `worker` stops serving (graceful shutdown): its rows go at once. The kinds stay known.
    ///
    /// # Errors
    /// Database errors.
    pub async fn unregister(&self, worker: &WorkerId) -> Result<u64> {
        let done = sqlx::query(sql::UNREGISTER)
            .bind(worker.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Every known kind and every kind with due pending jobs, with its live replicas and
    /// whether it is unserved, in one statement (`kinds`, the replicas' warnings; `/metrics`
    /// reads [`Kinds::replicas`] and the queue's gauges instead, one scan of the jobs).
    ///
    /// # Errors
    /// Database errors.
    pub async fn serving(&self) -> Result<Vec<KindServing>> {
        Ok(sqlx::query_as(sql::SERVING).fetch_all(&self.pool).await?)
    }

    /// Every known kind and every kind with a live replica, with its live replicas: the
    /// registry's half of [`Kinds::serving`], without a scan of the jobs.
    ///
    /// # Errors
    /// Database errors.
    pub async fn replicas(&self) -> Result<Vec<KindReplicas>> {
        Ok(sqlx::query_as(sql::REPLICAS).fetch_all(&self.pool).await?)
    }

    /// How many jobs of each of `limits`' kinds started in its rate's current window (the
    /// period ending now), cluster-wide (migration 0015's `studio_kind_starts`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn starts_in_window(
        &self,
        limits: &[(String, RateLimit)],
    ) -> Result<HashMap<String, i64>> {
        if limits.is_empty() {
            return Ok(HashMap::new());
        }
        let kinds: Vec<&str> = limits.iter().map(|(k, _)| k.as_str()).collect();
        let periods: Vec<f64> = limits
            .iter()
            .map(|(_, r)| r.period().as_secs_f64())
            .collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::STARTS_IN_WINDOW)
            .bind(&kinds)
            .bind(&periods)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }
}
