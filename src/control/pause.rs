//! Paused kinds: an operator stops the claiming of a kind (`kinds pause`) and starts it again
//! (`kinds resume`). The state lives in `public.studio_paused_kinds` (migration 0013) and the
//! claim statements leave paused kinds out themselves, so every replica honours a change at its
//! next claim; nothing is held in memory. Running jobs are not touched.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::sql::pause as sql;
use super::{Error, Result};
use crate::config::checked_kind_name;

/// One kind as `kinds` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct KindState {
    /// Kind.
    pub kind: String,
    /// Whether it is paused.
    pub paused: bool,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it (free text given by the operator's command).
    pub paused_by: Option<String>,
    /// Pending jobs (due or not).
    pub pending: i64,
    /// Running jobs.
    pub running: i64,
}

fn checked(kind: &str) -> Result<&str> {
    checked_kind_name(kind, Error::InvalidKind)
}

/// The paused kinds, over a pool whose role is (a member of) `studio_worker`.
#[derive(Debug, Clone)]
pub struct Pauses {
    pool: PgPool,
}

impl Pauses {
    /// The paused kinds over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Pauses { pool }
    }

    /// Pause `kind`: from their next claim on, no worker claims its jobs. Returns `false` when
    /// it was already paused (nothing changes).
    ///
    /// # Errors
    /// [`Error::InvalidKind`] for a name the queue cannot hold (nothing is changed), database
    /// errors.
    pub async fn pause(&self, kind: &str, paused_by: Option<&str>) -> Result<bool> {
        let row: Option<String> = sqlx::query_scalar(sql::PAUSE_KIND)
            .bind(checked(kind)?)
            .bind(paused_by)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Resume `kind`; idle workers are woken at once. Returns `false` when it was not paused.
    ///
    /// # Errors
    /// [`Error::InvalidKind`], database errors.
    pub async fn resume(&self, kind: &str) -> Result<bool> {
        let row: Option<String> = sqlx::query_scalar(sql::RESUME_KIND)
            .bind(checked(kind)?)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Every kind that has pending or running jobs, is paused, or is in `known` (e.g. the
    /// configured kinds), by name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn states(&self, known: &[String]) -> Result<Vec<KindState>> {
        Ok(sqlx::query_as(sql::KIND_STATES)
            .bind(known)
            .fetch_all(&self.pool)
            .await?)
    }
}
