//! Queue control kept in the database (issue 13): what operators set and every replica reads.
//!
//! One face: [`Control`] over a pool whose role is (a member of) `studio_worker`, handing out
//! one handle per feature, and one [`Error`]. Each feature is one module here with its
//! statements in `sql/<feature>.rs`, next to the migration that states its rule:
//! - [`pause`]: paused kinds, left out by every claim (migration 0013).
//! - [`schedule`]: periodic jobs, one per schedule and fire time (migration 0014).
//! - [`quota`]: per-user admission quotas, enforced at insert (migrations 0016, 0019).
//! - [`kinds`]: known kinds, the replicas that serve them, each kind's attempts and the starts
//!   in a rate's window (migrations 0015, 0017, 0020, 0021).
//! - [`audit`]: the operators' audit trail (migration 0024).
//! - [`why`]: why a pending job is not running, by the claim's rules.
//! - [`actor`]: who acted, as recorded beside each change (`--as`, `$USER`, the login role).
//! - [`autoscale`]: replicas needed for the runnable work, and the limits it counts with
//!   (migration 0025).
//!
//! What the database enforces on the queue's own statements stays in `queue`: the claim reads
//! pauses and start rates inside its statement or transaction (`queue::claim`), and the
//! refusals of an insert (unknown kind, quota) are `queue::refusal`'s types. This module
//! imports `queue`, never the other way round.

pub mod actor;
pub mod audit;
pub mod autoscale;
pub mod kinds;
pub mod pause;
pub mod quota;
pub mod schedule;
pub(crate) mod sql;
pub mod why;

use sqlx::PgPool;

/// Errors of queue control.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name the queue cannot hold; nothing was changed.
    #[error("invalid kind name {0:?}: expected a lowercase letter, then up to 63 of a-z 0-9 _ . -")]
    InvalidKind(String),
    /// Not a kind name the queue can hold, nor the default quota row (`*`); nothing was changed.
    #[error("invalid quota kind {0:?}: expected `*` (the default) or a kind name")]
    InvalidQuotaKind(String),
    /// A quota limit out of range; nothing was changed.
    #[error("invalid quota: {0}")]
    InvalidLimit(&'static str),
    /// `forget` of a kind that live replicas serve: they would register it again at once.
    #[error(
        "kind {kind:?} is served by {replicas} live replica(s): remove it from their configuration and restart them first"
    )]
    Served {
        /// The kind.
        kind: String,
        /// Live replicas serving it.
        replicas: i64,
    },
    /// Any database error (the tables' CHECKs refuse what slipped through).
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Result of queue control.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Queue control over one pool: the handle every caller starts from.
#[derive(Debug, Clone)]
pub struct Control {
    pool: PgPool,
}

impl Control {
    /// Control over `pool` (a role that is, or is a member of, `studio_worker`).
    pub fn new(pool: PgPool) -> Self {
        Control { pool }
    }

    /// Known kinds and their replicas.
    pub fn kinds(&self) -> kinds::Kinds {
        kinds::Kinds::new(self.pool.clone())
    }

    /// Paused kinds.
    pub fn pauses(&self) -> pause::Pauses {
        pause::Pauses::new(self.pool.clone())
    }

    /// Per-user admission quotas.
    pub fn quotas(&self) -> quota::Quotas {
        quota::Quotas::new(self.pool.clone())
    }

    /// Schedules' fire records.
    pub fn schedules(&self) -> schedule::Schedules {
        schedule::Schedules::new(self.pool.clone())
    }
}
