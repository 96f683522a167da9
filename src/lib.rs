//! studio-worker: the trusted background worker of the `public.studio_jobs` queue.
//!
//! End users create jobs through the Supabase Data API under row level security; this crate
//! connects straight to PostgreSQL as a member of the `studio_worker` role, claims pending jobs
//! with `FOR UPDATE SKIP LOCKED`, runs them, and records every status transition.
//!
//! # Layout
//! - [`db`]: connection pool, the embedded migrations, and classification of database errors.
//! - [`queue`]: the job model and the guarded SQL transitions (enqueue, claim, heartbeat,
//!   complete, fail, cancel, rescue).

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod handlers;
pub mod http;
pub mod queue;
pub mod shutdown;
pub mod telemetry;
pub mod worker;
