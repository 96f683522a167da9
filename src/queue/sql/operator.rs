//! Operators' transitions: cancel and retry one job, a list of ids (the dashboard), or every
//! finished job matching a filter (the bulk redrive), through the same `set` so that the
//! history trigger records each the same way.

/// Operator: cancel a pending job at once, or request cancellation of a running one.
pub(crate) const OPERATOR_CANCEL: &str = concat!(
    "\
update public.studio_jobs
   set status = case when status = 'pending' then 'cancelled' else status end,
       finished_at = case when status = 'pending' then now() else finished_at end,
       error = case when status = 'pending' then $2 else error end,
       cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
 where id = $1 and status in ('pending', 'running')
returning ",
    job_columns!()
);

/// What an operator's retry sets: the job is pending now, with at least one attempt left and
/// nothing left of its last outcome. One definition for `jobs retry ID` and the bulk redrive.
macro_rules! operator_retry_set {
    () => {
        "set status = 'pending', run_at = now(), finished_at = null, cancel_requested_at = null,
       max_attempts = greatest(max_attempts, attempt + 1), error = null, result = null,
       progress = 0, progress_message = null, updated_at = now()"
    };
}

/// Operator: a finished job goes back to pending, with at least one attempt left.
pub(crate) const OPERATOR_RETRY: &str = concat!(
    "update public.studio_jobs\n   ",
    operator_retry_set!(),
    "
 where id = $1 and status in ('succeeded', 'failed', 'cancelled')
returning ",
    job_columns!()
);

/// Operator: retry the finished jobs among `$1` (the dashboard's bulk retry, batch by batch,
/// ids sorted: lock order, see heartbeat); returns the ids moved.
pub(crate) const OPERATOR_RETRY_IDS: &str = concat!(
    "update public.studio_jobs\n   ",
    operator_retry_set!(),
    "
 where id = any($1::uuid[]) and status in ('succeeded', 'failed', 'cancelled')
returning id"
);

/// Operator: cancel the pending jobs among `$1` and ask the running ones to stop, with the
/// single cancel's transition; returns the ids changed.
pub(crate) const OPERATOR_CANCEL_IDS: &str = "\
update public.studio_jobs
   set status = case when status = 'pending' then 'cancelled' else status end,
       finished_at = case when status = 'pending' then now() else finished_at end,
       error = case when status = 'pending' then $2 else error end,
       cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
 where id = any($1::uuid[]) and status in ('pending', 'running')
   and (status = 'pending' or cancel_requested_at is null)
returning id";

// Bulk redrive (issue 13): `jobs retry --status failed|cancelled [filters]`, in batches, through
// the single retry's transition (`operator_retry_set!`), so the history trigger records each.
// Filters: `$1` status, `$2` kind or NULL, `$3` finished at or after (or NULL), `$4` a LIKE
// pattern matched case-insensitively against the error or the error detail (or NULL), `$5` the
// start of the run: a job retried in this run and finished again since is not taken twice.

/// The filter shared by [`REDRIVE_BATCH`] and [`REDRIVABLE`].
macro_rules! redrive_filter {
    () => {
        "status = $1 and status in ('failed', 'cancelled')
     and ($2::text is null or kind = $2)
     and ($3::timestamptz is null or finished_at >= $3)
     and ($4::text is null or error ilike $4
          or exists (select 1 from public.studio_job_failures f
                      where f.job_id = studio_jobs.id and f.attempt = studio_jobs.attempt
                        and f.detail ilike $4))
     and updated_at < $5"
    };
}

/// Move up to `$6` matching jobs back to pending; returns their ids.
pub(crate) const REDRIVE_BATCH: &str = concat!(
    "\
with chosen as (
  select id from public.studio_jobs
   where ",
    redrive_filter!(),
    "
   order by finished_at, id
   limit $6
   for update skip locked
)
update public.studio_jobs
   ",
    operator_retry_set!(),
    "
 where id = any(array(select id from chosen)) and status in ('failed', 'cancelled')
returning id"
);

/// How many jobs a redrive would move (`--dry-run`).
pub(crate) const REDRIVABLE: &str = concat!(
    "select count(*) from public.studio_jobs where ",
    redrive_filter!()
);

/// The database's clock: the start of a redrive run.
pub(crate) const DB_NOW: &str = "select now()";
