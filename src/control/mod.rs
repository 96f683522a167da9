//! Queue control kept in the database (issue 13): what operators set and every replica reads.
//!
//! Each feature is one module here with its statements in `sql/<feature>.rs`, next to the
//! migration that states its rule:
//! - [`schedule`]: periodic jobs, one per schedule and fire time (migration 0014).
//! - [`rate`]: per-kind start rates, enforced inside the claim (migration 0015).
//! - [`quota`]: per-user admission quotas, enforced at insert (migration 0016).
//! - [`kinds`]: known kinds and the replicas that serve them (migration 0017).
//! - [`audit`]: the operators' audit trail (migration 0024).
//! - [`why`]: why a pending job is not running, by the claim's rules.
//! - [`actor`]: who acted, as recorded beside each change (`--as`, `$USER`, the login role).
//! - [`autoscale`]: replicas needed for the runnable work, and the limits it counts with
//!   (migration 0025).
//!
//! Pausing a kind predates this module and lives in `queue::pause`.

pub mod actor;
pub mod audit;
pub mod autoscale;
pub mod kinds;
pub mod quota;
pub mod rate;
pub mod schedule;
pub(crate) mod sql;
pub mod why;
