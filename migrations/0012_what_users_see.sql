-- What end users see, and what only operators see.
--
-- 1. Internals leave the user's columns. Through RLS a user reads their own jobs and events;
--    before this migration those rows carried server paths, a program's stderr, service response
--    bodies and worker host names. Now:
--    - `studio_jobs.error` is a short message the executor or handler chooses to show;
--      `studio_jobs.error_detail` (new) holds what operators need (stderr tail, paths, response
--      bodies, the program's stdout when it was not a result);
--    - `studio_job_events.message` is the short message, `studio_job_events.detail` (new) the
--      operator's;
--    - column grants: `authenticated` may read every column but `studio_jobs.locked_by`,
--      `studio_jobs.error_detail`, `studio_job_events.worker` and `studio_job_events.detail`.
--      Realtime drops those columns from its payloads for the same reason. A client that asks
--      for them (`select *`) is refused with 42501: list the columns. Every column added to
--      these tables from now on needs its own grant to be readable by users.
--    - Existing rows: errors written before this migration may hold internals, so they move to
--      the detail columns and the user's column gets a neutral message.
-- 2. A job put back in the queue looks pending: a requeue (worker shutdown) or a rescue
--    (expired lease) clears what described the attempt that ended (error, progress, progress
--    message), and a retry after a failure resets the progress while keeping the error that
--    explains the retry. The history keeps the account: when the row carries no error, the
--    trigger names what happened from the attempt counter (given back: a shutdown; kept: an
--    expired lease).
--
-- The history trigger's function is replaced (same owner, security definer and search_path as
-- in 0007).

alter table public.studio_jobs
  add column error_detail text,
  add constraint studio_jobs_error_detail_size check (coalesce(length(error_detail), 0) <= 16384);
alter table public.studio_job_events add column detail text;

-- Existing rows (no status changes, so the history trigger records nothing).
update public.studio_jobs
   set error_detail = error,
       error = case status
                 when 'failed' then 'the job failed'
                 when 'pending' then 'the last attempt failed; it will be retried'
                 else error
               end
 where error is not null and status in ('failed', 'pending', 'running');
update public.studio_job_events
   set detail = message,
       message = case to_status
                   when 'failed' then 'the job failed'
                   else 'the attempt ended; the job will be retried'
                 end
 where message is not null and to_status in ('failed', 'pending');

revoke select on table public.studio_jobs from authenticated;
grant select (id, user_id, kind, input, status, priority, run_at, attempt, max_attempts,
              progress, progress_message, result, error, lease_expires_at, cancel_requested_at,
              created_at, updated_at, started_at, finished_at, idempotency_key,
              created_by_service)
  on table public.studio_jobs to authenticated;
revoke select on table public.studio_job_events from authenticated;
grant select (id, job_id, user_id, from_status, to_status, attempt, message, created_at)
  on table public.studio_job_events to authenticated;
grant update (error_detail) on table public.studio_jobs to studio_worker;

create or replace function public.studio_jobs_after_update() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    became_pending boolean;
  begin
    with recorded as (
      insert into public.studio_job_events
          (job_id, user_id, from_status, to_status, attempt, worker, message, detail)
        select n.id, n.user_id, o.status, n.status, n.attempt,
               coalesce(n.locked_by, o.locked_by),
               case
                 when o.status = 'pending' and n.status = 'running'
                      and n.attempt = o.attempt + 1 then null
                 when o.status = 'running' and n.status = 'succeeded' then null
                 when not public.studio_job_transition_allowed(o.status, n.status, o.attempt, n.attempt)
                   then public.studio_job_illegal_transition(n.id, o.status, n.status)
                 when n.status in ('failed', 'cancelled') then n.error
                 when o.status = 'running' and n.status = 'pending' then coalesce(
                   n.error,
                   case when n.attempt < o.attempt
                        then 'the worker shut down; this attempt was given back'
                        else 'lease expired: the worker stopped renewing it' end)
               end,
               case when n.status in ('failed', 'cancelled')
                         or (o.status = 'running' and n.status = 'pending') then n.error_detail
               end
          from old_rows o join new_rows n on n.id = o.id
         where n.status <> o.status
        returning to_status
    )
    select coalesce(bool_or(to_status = 'pending'), false) into became_pending from recorded;

    -- A job that became claimable now (operator retry, rescue, requeue): wake idle workers.
    if became_pending and exists (
      select 1 from old_rows o join new_rows n on n.id = o.id
       where n.status = 'pending' and o.status <> 'pending' and n.run_at <= now()
    ) then
      perform pg_notify('studio_jobs', '');
    end if;
    return null;
  end
  $$;

select public.studio_mark_schema(12);
