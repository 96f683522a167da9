//! The statements of queue control, one file per feature. The conventions of `queue::sql`
//! apply: `$now` parameters are `coalesce($n::timestamptz, now())` so tests can move time, and
//! status values are literals.

pub(crate) mod audit;
pub(crate) mod autoscale;
pub(crate) mod kinds;
pub(crate) mod quota;
pub(crate) mod rate;
pub(crate) mod schedule;
pub(crate) mod why;
