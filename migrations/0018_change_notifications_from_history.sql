-- Status-change notifications carry the history id they were written with (performance).
--
-- 0010's trigger found each changed job's history id again, with a lookup per changed row (the
-- latest studio_job_events row of the job, by primary key): 3 shared buffer hits per job in the
-- claim and 3 more in its completion, 6 of the 44.8 hits per job those two statements read with
-- every trigger (docs/benchmarks.md, "Where the −6 % went").
-- The history trigger already holds those ids, in its insert's RETURNING. Now it sends the
-- status changes itself, from the rows it just wrote, and studio_jobs_changed (0010) keeps the
-- progress changes only.
--
-- Unchanged: the channel `studio_job_changes`, the payload (a JSON array of
--   {"job", "user", "event", "from", "status", "attempt", "progress"} per status change,
-- chunks of 32 as in 0010, progress changes one per notification with their message), and the
-- order within a statement: the `studio_jobs` wake-up first (0012), then the status changes,
-- then the progress changes (studio_jobs_changed fires after studio_jobs_after_update: name
-- order). The history function's rules are 0012's, verbatim. One operator-visible difference:
-- `alter table … disable trigger studio_jobs_changed` now silences progress changes only.
--
-- The function is replaced (same owner, security definer and search_path as in 0007/0012). A
-- later migration that replaces it again must keep the notification: the API's stream test
-- asserts that live status events arrive with their history ids.

create or replace function public.studio_jobs_after_update() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    became_pending boolean;
    changes text[];
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
        returning id, job_id, user_id, from_status, to_status, attempt
    )
    select coalesce(bool_or(r.to_status = 'pending'), false),
           array(
             -- status changes, in chunks of 32 (0010)
             select json_agg(json_build_object(
                      'job', c.job_id, 'user', c.user_id, 'event', c.id, 'from', c.from_status,
                      'status', c.to_status,
                      'attempt', c.attempt, 'progress', c.progress))::text
               from (
                 select r2.id, r2.job_id, r2.user_id, r2.from_status, r2.to_status, r2.attempt,
                        n.progress, (row_number() over ()) / 32 as chunk_no
                   from recorded r2 join new_rows n on n.id = r2.job_id
               ) c
              group by c.chunk_no)
      into became_pending, changes
      from recorded r;

    -- A job that became claimable now (operator retry, rescue, requeue): wake idle workers.
    if became_pending and exists (
      select 1 from old_rows o join new_rows n on n.id = o.id
       where n.status = 'pending' and o.status <> 'pending' and n.run_at <= now()
    ) then
      perform pg_notify('studio_jobs', '');
    end if;

    perform pg_notify('studio_job_changes', payload) from unnest(changes) as payload;
    return null;
  end
  $$;

-- Progress changes of jobs whose status did not change, one per notification (0010's second
-- half, verbatim).
create or replace function public.studio_jobs_changed() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    perform pg_notify('studio_job_changes', json_build_array(json_build_object(
              'job', n.id, 'user', n.user_id, 'event', null, 'status', n.status,
              'attempt', n.attempt, 'progress', n.progress,
              'message', n.progress_message))::text)
      from old_rows o join new_rows n on n.id = o.id
     where n.status = o.status
       and (n.progress <> o.progress or n.progress_message is distinct from o.progress_message);
    return null;
  end
  $$;

select public.studio_mark_schema(18);
