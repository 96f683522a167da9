-- A job put back in the queue looks pending: a requeue (worker shutdown) or a rescue (expired
-- lease) clears what described the attempt that ended (error, progress, progress message), and a
-- retry after a failure resets the progress while keeping the error that explains the retry.
-- The history keeps the account of the attempt: when the row carries no error, the trigger
-- names what happened from the attempt counter (given back: a shutdown; kept: an expired
-- lease). The rescue's message no longer names the worker's host (users read it); the
-- history's `worker` column still records which worker held the job.
--
-- Only the history trigger's function changes (same owner, same security definer, same
-- search_path as in 0007); the statements that clear the columns are the worker's.

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
          (job_id, user_id, from_status, to_status, attempt, worker, message)
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
