//! studio-worker: the trusted background worker of the `public.studio_jobs` queue.
//!
//! End users create jobs through the Supabase Data API under row level security; this crate
//! connects straight to PostgreSQL as a member of the `studio_worker` role, claims pending jobs
//! with `FOR UPDATE SKIP LOCKED`, runs them, and records every status transition.
//!
//! # Layout
//! - [`config`]: settings (defaults, TOML file, environment), validated at start.
//! - [`db`]: connecting, the embedded migrations, the schema version, transient errors.
//! - [`queue`]: the job model and the guarded SQL transitions (enqueue, claim with fairness and
//!   caps, heartbeat, complete, fail, cancel, rescue) and operator operations.
//! - [`handlers`]: executors (`command`, `http`) and the [`handlers::Handler`] trait.
//! - [`worker`]: the runtime (claim loop, per-job execution, heartbeats, rescue, completions,
//!   LISTEN, retention).
//! - [`app`]: the daemon assembled; [`http`]: `/healthz`, `/readyz`, `/metrics`;
//!   [`shutdown`]: SIGTERM/SIGINT; [`telemetry`]: logging.
//! - [`api`]: the job API (create, read, cancel and follow jobs as the signed-in user).
//! - [`cli`]: the subcommands; [`mod@bench`]: `studio-worker bench`; [`bench_api`]: its `api`
//!   phase.

pub mod api;
pub mod app;
pub mod bench;
pub mod bench_api;
pub mod cli;
pub mod config;
pub mod db;
pub mod handlers;
pub mod http;
pub mod queue;
pub mod shutdown;
pub mod telemetry;
pub mod worker;
