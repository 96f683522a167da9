//! A running attempt's transitions, each fenced by its lease: progress, success (many at once),
//! failure, the worker's cancel, and the requeue at shutdown.
//!
//! The fence is id, attempt and owner (`locked_by`). It says "running" without naming the
//! status: a job runs exactly while its owner and lease are set (0002's CHECK), and every
//! transition out of running, here and in the rescue, clears both. Naming the status would let
//! the planner read the lease index (every running job, `where status = 'running'`) in place
//! of probing the primary key, and with statistics taken before the jobs started it does: a
//! loop over every running job for every lease (issue 19; `tests/integration/plans.rs`).

/// Record progress (0..100) and an optional message for a running job.
pub(crate) const PROGRESS: &str = "\
update public.studio_jobs
   set progress = $4, progress_message = $5, updated_at = now()
 where id = $1 and attempt = $2 and locked_by = $3
returning (cancel_requested_at is not null) as cancel_requested";

/// Mark many running jobs succeeded in one statement; returns the ids that were still held.
pub(crate) const COMPLETE_MANY: &str = "\
update public.studio_jobs j
   set status = 'succeeded', result = c.result, error = null, progress = 100,
       finished_at = now(), updated_at = now(), locked_by = null, lease_expires_at = null
  from unnest($1::uuid[], $2::int4[], $3::jsonb[]) as c(id, attempt, result)
 where j.id = c.id and j.attempt = c.attempt and j.locked_by = $4
returning j.id";

/// Record a failed attempt: `$6` the user's message, `$7` the operator's detail (or NULL, then
/// nothing more is written), kept apart from the users' row in `studio_job_failures` (0023).
/// `$4` says whether the error is retryable; the database decides the
/// outcome from what it knows now (attempts left, cancellation requested):
/// cancelled if cancellation was requested, pending after `$5` seconds if retryable with
/// attempts left, failed otherwise.
pub(crate) const FAIL: &str = "\
with decision as (
  select id, case
           when cancel_requested_at is not null then 'cancelled'
           when $4 and attempt < max_attempts then 'pending'
           else 'failed'
         end as next_status
    from public.studio_jobs
   where id = $1 and attempt = $2 and locked_by = $3
   for update
),
detail as (
  insert into public.studio_job_failures (job_id, attempt, detail)
  select id, $2, $7 from decision where $7::text is not null
  on conflict (job_id, attempt) do update set detail = excluded.detail, created_at = now()
)
update public.studio_jobs j
   set status = d.next_status,
       run_at = case when d.next_status = 'pending'
                     then now() + make_interval(secs => $5::float8) else j.run_at end,
       finished_at = case when d.next_status = 'pending' then null else now() end,
       -- A retry starts from scratch; the error says why it is retried.
       progress = case when d.next_status = 'pending' then 0 else j.progress end,
       progress_message = case when d.next_status = 'pending' then null else j.progress_message end,
       error = $6, updated_at = now(), locked_by = null,
       lease_expires_at = null
  from decision d
 where j.id = d.id and j.attempt = $2 and j.locked_by = $3
returning j.status, j.run_at";

/// The worker stops a running job because cancellation was requested (or it timed out waiting).
pub(crate) const CANCEL_RUNNING: &str = "\
update public.studio_jobs
   set status = 'cancelled', error = $4, finished_at = now(), updated_at = now(),
       locked_by = null, lease_expires_at = null
 where id = $1 and attempt = $2 and locked_by = $3";

/// Put a running job back to pending without using up its attempt (worker shutdown), looking
/// like any pending job: no error, no progress (the history records the requeue). A job whose
/// cancellation was requested is cancelled instead.
pub(crate) const REQUEUE: &str = "\
update public.studio_jobs
   set status = case when cancel_requested_at is null then 'pending' else 'cancelled' end,
       attempt = case when cancel_requested_at is null then attempt - 1 else attempt end,
       finished_at = case when cancel_requested_at is null then null else now() end,
       progress = case when cancel_requested_at is null then 0 else progress end,
       progress_message = case when cancel_requested_at is null then null else progress_message end,
       run_at = now(),
       error = case when cancel_requested_at is null then null else 'cancelled by request' end,
       updated_at = now(), locked_by = null, lease_expires_at = null
 where id = $1 and attempt = $2 and locked_by = $3
returning status";
