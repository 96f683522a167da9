//! The operators' dashboard on real parts: a fresh database per test (`#[sqlx::test]`), the
//! dashboard served on a free port over a pool of the worker's login role (as in production),
//! requests over HTTP with real sessions, and a real browser (Debian's headless chromium).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod browser;
mod plans;

mod security;
mod sessions;
mod users;
