//! studio-worker: the trusted background worker of the `public.studio_jobs` queue.
//!
//! End users create jobs through the Supabase Data API under row level security; this crate
//! connects straight to PostgreSQL as a member of the `studio_worker` role, claims pending jobs
//! with `FOR UPDATE SKIP LOCKED`, runs them, and records every status transition.
//!
//! # Layout
//! Public (what an embedder needs, see `examples/embedded.rs`):
//! - [`config`]: settings (defaults, TOML file, environment), validated at start.
//! - [`db`]: connecting, the embedded migrations, the schema version, transient errors.
//! - [`queue`]: the job model and the guarded SQL transitions (enqueue, the one claim planner
//!   with fairness, caps and start rates, heartbeat, complete, fail, cancel, rescue), operators'
//!   reads and bulk actions ([`queue::Admin`]), and the database's refusals of an insert
//!   ([`queue::refusal`]).
//! - [`control`]: queue control kept in the database, behind one handle
//!   ([`control::Control`]: pauses, schedules, quotas, known kinds) and one error.
//! - [`handlers`]: the [`handlers::Handler`] trait, the built-in `command` and `http` handlers,
//!   and the [`handlers::Registry`] of kinds ([`handlers::KindRuntime`]: handler + limits).
//! - [`notify`]: LISTEN/NOTIFY: the channels, their payloads and the one reconnecting listener
//!   loop of the worker, the job API's streams and the dashboard.
//! - [`limits`]: what a kind may do ([`limits::KindLimits`]: concurrency, cluster cap, start
//!   rate, timeout, retry backoff, attempts), parsed once at load; the ground floor.
//! - [`worker`]: the runtime (claim loop paced by a pure `pacer`, per-job execution,
//!   heartbeats, rescue, completions, LISTEN, retention, the scheduler of `[schedules]`).
//! - [`app`]: the daemon assembled; [`shutdown`]: SIGTERM/SIGINT; [`telemetry`]: logging.
//! - [`api`]: the job API surface (create, read, cancel and follow jobs as the signed-in user),
//!   served by the same HTTP assembly.
//! - [`dashboard`]: the operators' web dashboard (sign-in, roles, audit), on its own listener.
//!
//! Internal: `server` (one HTTP assembly, `server::ops` serves `/healthz`, `/readyz`,
//! `/metrics`) and `bench` (`studio-worker bench`). `cli` (the subcommands) is public only
//! because the binary, a separate crate, dispatches to it; it is hidden from the docs and not
//! an API.

pub mod api;
pub mod app;
mod bench;
#[doc(hidden)]
pub mod cli;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod db;
pub mod handlers;
pub mod limits;
mod memory;
pub mod notify;
pub mod queue;
mod server;
pub mod shutdown;
pub mod telemetry;
pub mod worker;
