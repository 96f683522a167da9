//! The real `studio-worker` binary against a real PostgreSQL: end to end through both
//! executors, crashes, replicas, signals, database outages and bad configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod api;
mod cli;
mod compose_sequence;
mod credentials;
mod end_to_end;
mod faults;
mod first_hour;
mod known_kinds;
mod leases;
mod quotas;
mod rate;
mod replicas;
mod scale;
mod schedules;
