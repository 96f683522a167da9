//! The job API against a real PostgreSQL (`DATABASE_URL`, a role that can create databases):
//! each `#[sqlx::test]` gets a fresh database, the API connects as a login role in `studio_api`,
//! and requests go over HTTP with tokens signed by real keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod auth;
mod browser;
mod conformance;
mod jobs;
mod limits;
mod quota;
mod streams;
