-- The watch check costs a probe per changed job, not a read of every watch (issue 19).
--
-- 0027 announces status and progress changes only for jobs an API process watches. With any
-- watch present, its check was planned as a hash of the whole watch table in every claim's and
-- completion's history statement: next to 10,000 watches (10,000 open streams), `auto_explain`
-- of a 500-job claim showed 2.1 ms of the trigger's 4.4 ms there, a cost that grows with the
-- number of watches.
--
-- Now both triggers first collect the statement's watched jobs (`studio_watched_jobs`): with at
-- least as many watches as changed jobs, one probe of the watch table's primary key per job
-- (0.55 ms for 500 jobs, whatever the number of watches); with fewer, a hash of those few
-- watches. The announcing statements read only that list, and the progress trigger probes only
-- the jobs whose progress changed (none in a claim or a completion). What is announced, and
-- when, is unchanged.

-- Of `jobs`, those somebody watches (an unexpired row of `studio_job_watches`), each once.
-- Volatile, like the triggers calling it: it reads the watches committed when it runs (0027's
-- ordering of a watch against a transition waiting for it depends on that).
create function public.studio_watched_jobs(jobs uuid[]) returns uuid[]
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    if cardinality(studio_watched_jobs.jobs) = 0 then
      return '{}';
    end if;
    if (select count(*) from (select 1 from public.studio_job_watches
                               limit cardinality(studio_watched_jobs.jobs)) few)
       < cardinality(studio_watched_jobs.jobs) then
      -- Fewer watches than jobs: read them all once.
      return array(select j.id from unnest(studio_watched_jobs.jobs) as j(id)
                    where exists (select 1 from public.studio_job_watches w
                                   where w.job_id = j.id and w.expires_at > now()));
    end if;
    -- As many or more: one probe of the primary key per job (a subquery with a LIMIT is
    -- evaluated per row, never hashed).
    return array(select j.id from unnest(studio_watched_jobs.jobs) as j(id)
                  where (select true from public.studio_job_watches w
                          where w.job_id = j.id and w.expires_at > now()
                          limit 1));
  end
  $$;
-- A probe is a plain index scan: without statistics the planner took a bitmap scan for each.
alter function public.studio_watched_jobs(uuid[]) set enable_bitmapscan = off;
revoke all on function public.studio_watched_jobs(uuid[]) from public, anon, authenticated;

-- The history trigger: 0027's function, with the watched jobs read as above.
create or replace function public.studio_jobs_after_update() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    became_pending boolean;
    changes text[];
    -- The statement's jobs that somebody follows (none: nothing is announced).
    watched uuid[] := '{}';
  begin
    if exists (select 1 from public.studio_job_watches) then
      watched := public.studio_watched_jobs(array(select n.id from new_rows n));
    end if;
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
        returning id, job_id, user_id, from_status, to_status, attempt, created_at,
                  message is not null as reason
    )
    select coalesce(bool_or(r.to_status = 'pending'), false),
           array(
             -- status changes of watched jobs, in chunks of 16 (each at most ~260 bytes: a
             -- notification holds 8,000), with the history row's time and whether it has a
             -- message (the stream reads the message from the history only then)
             select json_agg(json_build_object(
                      'job', c.job_id, 'user', c.user_id, 'event', c.id, 'from', c.from_status,
                      'status', c.to_status,
                      'attempt', c.attempt, 'progress', c.progress, 'at', c.created_at,
                      'reason', c.reason))::text
               from (
                 select r2.id, r2.job_id, r2.user_id, r2.from_status, r2.to_status, r2.attempt,
                        r2.created_at, r2.reason, n.progress,
                        (row_number() over ()) / 16 as chunk_no
                   from recorded r2 join new_rows n on n.id = r2.job_id
                  where cardinality(watched) > 0
                    and r2.job_id in (select unnest(watched))
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

-- Progress changes: 0027's function, probing only the jobs whose progress changed.
create or replace function public.studio_jobs_changed() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    watched uuid[];
  begin
    if not exists (select 1 from public.studio_job_watches) then
      return null;
    end if;
    -- Progress changes without a status change (none in a claim or a completion), then which
    -- of those jobs are watched.
    watched := public.studio_watched_jobs(array(
      select n.id from old_rows o join new_rows n on n.id = o.id
       where n.status = o.status
         and (n.progress <> o.progress or n.progress_message is distinct from o.progress_message)));
    if cardinality(watched) = 0 then
      return null;
    end if;
    perform pg_notify('studio_job_changes', json_build_array(json_build_object(
              'job', n.id, 'user', n.user_id, 'event', null, 'status', n.status,
              'attempt', n.attempt, 'progress', n.progress,
              'message', n.progress_message))::text)
      from new_rows n
     where n.id in (select unnest(watched));
    return null;
  end
  $$;

select public.studio_mark_schema(28);
