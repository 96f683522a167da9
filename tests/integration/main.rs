//! Integration tests against a real PostgreSQL (`DATABASE_URL`, a role that can create
//! databases). Each `#[sqlx::test]` gets a fresh database with the migrations applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod autoscale;
mod claim;
mod fairness;
mod history;
mod kind_attempts;
mod known_kinds;
mod lifecycle;
mod migrations;
mod pause;
mod plans;
mod quota;
mod rate;
mod rls;
mod schedules;
mod schema_version;
mod trigger_plans;
mod watches;
mod why;
mod worker;
