//! Every statement the queue runs, one file per concern (as in `control::sql`):
//! - `enqueue`: inserting jobs;
//! - `claim`: the claims, how their transaction begins, and the caps' lock and counts;
//! - `rate`: the start rates' log, read and written inside a capped claim;
//! - `transition`: a running attempt's transitions under its lease;
//! - `lease`: heartbeats and the rescue of expired leases;
//! - `job`: one job and its history by id;
//! - `operator`: operators' cancel and retry (one job, a list of ids, a bulk redrive);
//! - `inspect`: what operators read (lists, counts, the `/metrics` gauges);
//! - `prune`: deleting old finished jobs;
//! - `user`: the Job API's statements, run as a signed-in user.
//!
//! Conventions:
//! - `$now` parameters are `coalesce($n::timestamptz, now())`, so tests can move time forward
//!   without sleeping; production passes NULL and the database clock decides.
//! - Status values are literals, never parameters, so the planner matches them against the partial
//!   indexes' predicates.
//! - Every transition of a running job is fenced by id, status, owner (`locked_by`) and attempt; a
//!   statement that matches nothing means the lease was lost.
//!
//! The macros here are the column lists and CTEs that several files share; a `macro_rules!` is
//! in scope in the modules declared after it, so they come first.

/// Columns returned for a claimed job (see `ClaimedJob`).
macro_rules! claimed_columns {
    () => {
        "j.id, j.user_id, j.kind, j.input, j.priority, j.run_at, j.attempt, j.max_attempts, \
         j.created_at, j.lease_expires_at, (j.cancel_requested_at is not null) as cancel_requested"
    };
}

/// The end of every claim: the rows chosen by a `next` CTE become running under worker `$3` with
/// a lease of `$4` seconds from `now`, and come back as `ClaimedJob`s.
///
/// The chosen ids are passed as an array so that the update always finds them by primary key:
/// a join against `next` let a generic plan (which cannot know the LIMIT) pick a hash join over
/// the whole table, a claim whose cost grew with every row ever kept.
macro_rules! take_claimed {
    () => {
        concat!(
            "update public.studio_jobs j
   set status = 'running', attempt = j.attempt + 1, locked_by = $3,
       lease_expires_at = (select ts from now) + make_interval(secs => $4::float8),
       started_at = (select ts from now), updated_at = (select ts from now),
       progress = 0, progress_message = null
 where j.id = any(array(select id from next))
returning ",
            claimed_columns!()
        )
    };
}

/// The CTE every claim reads its kinds from: those of the kinds in `$1` that are not paused
/// (migration 0013). Filtering the kinds once, rather than each candidate row, keeps a paused kind
/// with many pending jobs from costing the claims of the other kinds anything: its rows fail the
/// same `kind = any(..)` test the claim always applied.
macro_rules! unpaused_kinds {
    () => {
        "unpaused as (
  select array(select k from unnest($1::text[]) as k
                where not exists (select 1 from public.studio_paused_kinds p where p.kind = k))
           as kinds
)"
    };
}

/// Every column of a job row (see `Job`), and the operators' detail of its current attempt's
/// failure (`studio_job_failures`, 0023) while the row carries an error. The statements that use
/// it name the table `studio_jobs` without an alias.
macro_rules! job_columns {
    () => {
        "id, user_id, kind, input, status, priority, run_at, attempt, max_attempts, progress, \
         progress_message, result, error, \
         (select f.detail from public.studio_job_failures f \
           where f.job_id = studio_jobs.id and f.attempt = studio_jobs.attempt \
             and studio_jobs.error is not null) as error_detail, \
         locked_by, lease_expires_at, \
         cancel_requested_at, created_at, updated_at, started_at, finished_at"
    };
}

pub(crate) mod claim;
pub(crate) mod enqueue;
pub(crate) mod inspect;
pub(crate) mod job;
pub(crate) mod lease;
pub(crate) mod operator;
pub(crate) mod prune;
pub(crate) mod rate;
pub(crate) mod transition;
pub(crate) mod user;
