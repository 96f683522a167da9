//! The database's refusals of the queue's writes, typed, with every SQLSTATE they come as: one
//! home for the contract between the migrations and the Rust side (the API's problem responses
//! and the CLI's messages are built from these types, never from codes).
//!
//! | SQLSTATE | raised by | becomes |
//! |---|---|---|
//! | `PT422` | the known-kind check (0017, 0020) | [`UnknownKind`] |
//! | `PT429` | the quota trigger (0016, 0019) | [`QuotaExceeded`] |
//! | `23503` on `studio_jobs_user_id_fkey` | an owner missing from `auth.users` | `Error::UnknownUser` |
//! | `23514` | a CHECK (kind format, input size, ranges) | `Error::InvalidJob` |
//! | `42501` on a user's insert | the insert policies (priority, `run_at`) | `Error::InvalidJob` |
//! | `P0002` from `cancel_studio_job` | no such job of the caller | `Error::NotFound` |
//! | `55000` from `cancel_studio_job` | the job finished meanwhile | `Error::WrongStatus` |
//!
//! `PTxyz` is a class PostgreSQL does not use; PostgREST answers it with HTTP status xyz, so a
//! frontend's insert gets the same 422 or 429 as the job API's.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::{Error, JobStatus};

/// The SQLSTATE migration 0017 raises for an insert of an unknown kind. PostgREST answers a
/// `PTxyz` SQLSTATE with HTTP status xyz, so a frontend's insert gets a 422.
pub const UNKNOWN_KIND_SQLSTATE: &str = "PT422";

/// The SQLSTATE of a quota's refusal (migration 0016). PostgREST answers `PT429` with HTTP 429.
pub const QUOTA_SQLSTATE: &str = "PT429";

/// The quota row that applies to every kind without a row of its own (`control::quota`).
pub const DEFAULT_QUOTA: &str = "*";

/// foreign_key_violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";
/// check_violation.
const CHECK_VIOLATION: &str = "23514";
/// insufficient_privilege: on a user's insert, the insert policies.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// no_data_found: `cancel_studio_job` found no job of the caller's with that id.
const NO_DATA_FOUND: &str = "P0002";
/// object_not_in_prerequisite_state: `cancel_studio_job` found the job finished.
const NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// A job of a kind the database does not know was refused: nothing was inserted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job kind {kind:?}")]
pub struct UnknownKind {
    /// The kind, as the database named it.
    pub kind: String,
}

impl UnknownKind {
    /// The refusal in a database error, if it is one (`PT422`); the kind is read from the
    /// trigger's message (`unknown job kind "K"`).
    pub fn from_database(db: &dyn sqlx::error::DatabaseError) -> Option<Self> {
        if db.code().as_deref() != Some(UNKNOWN_KIND_SQLSTATE) {
            return None;
        }
        let kind = db
            .message()
            .strip_prefix("unknown job kind \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_default();
        Some(UnknownKind {
            kind: kind.to_owned(),
        })
    }
}

/// Which cap refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// Most unfinished (pending or running) jobs of the kind per user.
    MaxUnfinished,
    /// Most jobs of the kind created per user within a period.
    MaxCreated,
}

impl QuotaLimit {
    /// The name used in the refusal's detail and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::MaxUnfinished => "max_unfinished",
            QuotaLimit::MaxCreated => "max_created",
        }
    }
}

/// A user's insert refused by a quota: what the database's PT429 says, typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct QuotaExceeded {
    /// The kind of the refused job.
    pub kind: String,
    /// Which cap.
    pub quota: QuotaLimit,
    /// Whether the cap came from the default row (`*`) rather than the kind's own.
    pub default: bool,
    /// The cap.
    pub limit: i64,
    /// The period of a `max_created` cap.
    pub per: Option<Duration>,
    /// How long until a slot frees, when waiting helps (the period cap); `None` when only a
    /// job finishing (or being cancelled) frees one.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.quota, self.per) {
            (QuotaLimit::MaxCreated, Some(per)) => write!(
                f,
                "quota exceeded: at most {} {} jobs per user every {}",
                self.limit,
                self.kind,
                humantime::format_duration(per)
            )?,
            _ => write!(
                f,
                "quota exceeded: at most {} unfinished {} jobs per user",
                self.limit, self.kind
            )?,
        }
        match self.retry_after {
            Some(wait) => write!(f, "; try again in {}", humantime::format_duration(wait)),
            None => f.write_str("; wait until one of them finishes, or cancel one"),
        }
    }
}

impl QuotaExceeded {
    /// The refusal in a database error, if it is one.
    pub fn from_database(db: &dyn sqlx::error::DatabaseError) -> Option<QuotaExceeded> {
        if db.code().as_deref() != Some(QUOTA_SQLSTATE) {
            return None;
        }
        let detail = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
            .detail()?;
        QuotaExceeded::parse_detail(detail)
    }

    /// Parse the refusal's DETAIL (`quota=… kind=… scope=… limit=…` and, for `max_created`,
    /// `per_seconds=… retry_after=…`; see migration 0016).
    pub fn parse_detail(detail: &str) -> Option<QuotaExceeded> {
        let value = |key: &str| {
            detail.split(' ').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then_some(v)
            })
        };
        let seconds = |key: &str| value(key)?.parse().ok().map(Duration::from_secs);
        let quota = match value("quota")? {
            "max_unfinished" => QuotaLimit::MaxUnfinished,
            "max_created" => QuotaLimit::MaxCreated,
            _ => return None,
        };
        let default = match value("scope")? {
            "default" => true,
            "kind" => false,
            _ => return None,
        };
        let (per, retry_after) = match quota {
            QuotaLimit::MaxUnfinished => (None, None),
            QuotaLimit::MaxCreated => {
                (Some(seconds("per_seconds")?), Some(seconds("retry_after")?))
            }
        };
        Some(QuotaExceeded {
            kind: value("kind")?.to_owned(),
            quota,
            default,
            limit: value("limit")?.parse().ok()?,
            per,
            retry_after,
        })
    }

    /// The quota row that refused: the kind, or [`DEFAULT_QUOTA`]. Bounded by the table's rows, so
    /// fit for a metrics label (the job's kind is not: users choose it).
    pub fn quota_row(&self) -> &str {
        if self.default {
            DEFAULT_QUOTA
        } else {
            &self.kind
        }
    }
}

/// Turn constraint violations and control refusals (unknown kind, quota) on insert into the
/// errors a caller can act on. `users` are the owners of the rows inserted: when they are all
/// the same user, that is the unknown one.
pub(crate) fn insert_error(err: sqlx::Error, users: &[Uuid]) -> Error {
    let Some(db) = err.as_database_error() else {
        return Error::Db(err);
    };
    if let Some(refused) = QuotaExceeded::from_database(db) {
        return Error::QuotaExceeded(refused);
    }
    if let Some(unknown) = UnknownKind::from_database(db) {
        return Error::UnknownKind(unknown);
    }
    match (db.code().as_deref(), db.constraint()) {
        (Some(FOREIGN_KEY_VIOLATION), Some("studio_jobs_user_id_fkey")) => {
            let named = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .and_then(key_value)
                .and_then(|key| key.parse().ok());
            let only = match users {
                [first, rest @ ..] if rest.iter().all(|u| u == first) => Some(*first),
                _ => None,
            };
            Error::UnknownUser(named.or(only))
        }
        (Some(CHECK_VIOLATION), Some(constraint)) => Error::InvalidJob {
            constraint: constraint.to_owned(),
            detail: db.message().to_owned(),
        },
        _ => Error::Db(err),
    }
}

/// The value in a PostgreSQL key detail: `Key (user_id)=(…) is not present…` → `…` (shown only
/// to roles that may read the referenced table).
fn key_value(detail: &str) -> Option<&str> {
    let start = detail.find(")=(")? + 3;
    let len = detail[start..].find(')')?;
    Some(&detail[start..start + len])
}

/// A user's insert (`UserTx::create`): 42501 is the insert policies refusing the row (a priority above 0, a `run_at` in
/// the past); anything else is sorted by `insert_error`.
pub(crate) fn user_insert_error(err: sqlx::Error) -> Error {
    let code = err.as_database_error().and_then(|db| db.code());
    if code.as_deref() == Some(INSUFFICIENT_PRIVILEGE) {
        return Error::InvalidJob {
            constraint: "studio_jobs_owner_insert_limits".to_owned(),
            detail: err.to_string(),
        };
    }
    insert_error(err, &[])
}

/// The cancellation of job `id` by its owner (`UserTx::cancel`) failed with `err`.
pub(crate) fn cancel_error(err: sqlx::Error, id: Uuid) -> Error {
    match err.as_database_error().and_then(|db| db.code()).as_deref() {
        Some(NO_DATA_FOUND) => Error::NotFound(id),
        // finished between the read and the call (the read does not lock)
        Some(NOT_IN_PREREQUISITE_STATE) => Error::WrongStatus {
            job_id: id,
            action: "cancelled",
            status: JobStatus::Succeeded,
        },
        _ => Error::Db(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_names_the_kind_for_operators() {
        let err = UnknownKind {
            kind: "rendr".to_owned(),
        };
        // The database's words only: the CLI adds its advice, the API its field.
        assert_eq!(err.to_string(), "unknown job kind \"rendr\"");
    }

    #[test]
    fn the_period_refusal_parses_with_its_wait() {
        let q = QuotaExceeded::parse_detail(
            "quota=max_created kind=render scope=default limit=100 per_seconds=3600 retry_after=42",
        )
        .unwrap();
        assert_eq!(q.quota, QuotaLimit::MaxCreated);
        assert_eq!(q.kind, "render");
        assert!(q.default);
        assert_eq!(q.quota_row(), "*");
        assert_eq!(q.limit, 100);
        assert_eq!(q.per, Some(Duration::from_secs(3600)));
        assert_eq!(q.retry_after, Some(Duration::from_secs(42)));
        assert_eq!(
            q.to_string(),
            "quota exceeded: at most 100 render jobs per user every 1h; try again in 42s"
        );
    }

    #[test]
    fn the_unfinished_refusal_parses_without_a_wait() {
        let q = QuotaExceeded::parse_detail("quota=max_unfinished kind=render scope=kind limit=10")
            .unwrap();
        assert_eq!(q.quota, QuotaLimit::MaxUnfinished);
        assert_eq!(q.quota_row(), "render");
        assert_eq!(q.retry_after, None);
    }

    #[test]
    fn other_details_are_not_refusals() {
        assert_eq!(QuotaExceeded::parse_detail("something else"), None);
        assert_eq!(
            QuotaExceeded::parse_detail("quota=max_created kind=a scope=kind limit=1"),
            None
        );
    }

    #[test]
    fn key_value_extracts_the_offending_key() {
        let detail = "Key (user_id)=(0b5a7c0e-0000-4000-8000-000000000000) is not present in table \"users\".";
        assert_eq!(
            key_value(detail),
            Some("0b5a7c0e-0000-4000-8000-000000000000")
        );
        assert_eq!(key_value("no key here"), None);
    }
}
