//! Periodic jobs (`[schedules.<name>]`).
