-- Cheaper triggers (issue 5: every claim and completion pays for them).
--
-- 0003's trigger made three passes over the changed rows and called
-- studio_job_transition_allowed() for each one; that function has its own search_path, so
-- PostgreSQL cannot inline it and pays a full function call (with a GUC save and restore) per
-- row. A profile of claim 100 + complete 100 put the trigger at about a fifth of the database's
-- time, a third of it in that call.
--
-- Now:
-- - one pass: the insert into studio_job_events also checks each transition. The two that the
--   worker makes thousands of times a second (pending -> running with attempt + 1,
--   running -> succeeded) are recognised inline; any other goes through
--   studio_job_transition_allowed(), which stays the one definition of the rules. An illegal
--   transition raises the same error as before (55000, same message and hint);
-- - the wake-up for jobs that became claimable again is looked for only when some row became
--   pending (rare: retries, rescues, requeues, operator retries);
-- - a single-job insert (what the frontend does) names its job in the wake-up, after its kind:
--   'render,#<id>'. An idle worker takes it by primary key instead of searching the queue;
--   workers that only read kinds still see 'render';
-- - cancellation requests are a row trigger that fires only for statements naming
--   cancel_requested_at (cancel_studio_job, the operator's cancel), so claims and completions
--   never look for them.

create function public.studio_job_illegal_transition(job uuid, from_status text, to_status text)
  returns text
  language plpgsql
  set search_path = ''
  as $$
  begin
    raise exception 'studio_jobs: illegal status transition % -> % for job %',
        from_status, to_status, job
      using errcode = 'object_not_in_prerequisite_state',
            hint = 'Allowed: pending->running|cancelled, running->succeeded|failed|cancelled|pending, finished->pending (operator retry).';
  end
  $$;

create or replace function public.studio_jobs_after_insert() returns trigger
  language plpgsql
  set search_path = ''
  as $$
  declare
    bad uuid;
    kinds text;
    inserted bigint;
    first_id uuid;
    due boolean;
  begin
    select n.id into bad from new_rows n where n.status <> 'pending' or n.attempt <> 0 limit 1;
    if found then
      raise exception 'studio_jobs: job % must be created as pending with attempt 0', bad
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    -- Payload: the kinds inserted, so workers can ignore kinds they do not run ('' = look
    -- anyway), and for one job that is due now, its id.
    select string_agg(distinct n.kind, ','), count(*), (array_agg(n.id))[1],
           bool_and(n.run_at <= now())
      into kinds, inserted, first_id, due
      from new_rows n;
    perform pg_notify('studio_jobs', case
      when length(kinds) >= 7000 then ''
      when inserted = 1 and due then kinds || ',#' || first_id::text
      else kinds
    end);
    return null;
  end
  $$;

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
                 when n.status in ('failed', 'cancelled')
                      or (o.status = 'running' and n.status = 'pending') then n.error
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

-- Cancellation requested for a running job: tell the worker that runs it.
create function public.studio_jobs_after_cancel_request() returns trigger
  language plpgsql
  set search_path = ''
  as $$
  begin
    perform pg_notify('studio_jobs_cancel', new.id::text);
    return null;
  end
  $$;

create trigger studio_jobs_after_cancel_request
  after update of cancel_requested_at on public.studio_jobs
  for each row
  when (old.cancel_requested_at is null and new.cancel_requested_at is not null
        and new.status = 'running')
  execute function public.studio_jobs_after_cancel_request();

revoke all on function public.studio_job_illegal_transition(uuid, text, text)
  from public, anon, authenticated;
revoke all on function public.studio_jobs_after_cancel_request() from public, anon, authenticated;
