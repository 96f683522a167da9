-- Streams cost nothing when nobody watches, and quota checks read by index (issue 19).
--
-- Until now every claim and every completion sent a NOTIFY on `studio_job_changes` (0010, 0018)
-- for the job API's streams and the dashboard, whether or not anyone followed the job, and
-- PostgreSQL commits notifying transactions one at a time (a cluster-wide lock held across the
-- commit's WAL flush): the claimer's and the completer's commits queued behind each other.
--
-- Now a status or progress change is announced only for a job somebody follows:
--
-- - `studio_job_watches (job_id, watcher, expires_at)`: one row per job and API process that
--   streams it, written only through the functions below (the job API's role may execute them;
--   nobody reads or writes the table directly). A crashed process leaves rows that expire
--   (`expires_at`); the living refresh theirs and delete rows long expired.
-- - The history trigger (0023's function; its rules and payloads are unchanged) and the progress
--   trigger (0018's) probe the table once per statement and send nothing when it is empty, else
--   only the changes of watched jobs. Realtime and the history are untouched (they do not use
--   NOTIFY); the `studio_jobs` wake-up and `studio_jobs_cancel` are unchanged.
-- - A status change's notification now carries the history row's time (`at`) and whether it
--   has a message (`reason`), so a stream sends a claim's or a success's event without reading
--   the history again (it still reads it for a failure's or a cancellation's message); chunks of
--   16 changes instead of 32 keep each notification under its 8,000-byte limit.
-- - Gap-free by a lock, not by timing: `studio_watch_job` takes FOR SHARE on the job's row before
--   writing the watch, in one transaction. A transition already holding the row commits first
--   (and the stream's first read, after the watch, sees it); a later one waits for the watch to
--   commit, and the trigger's query (a fresh snapshot: the function is volatile, READ COMMITTED)
--   sees it. A claim meeting the share lock skips that job for one claim (SKIP LOCKED). One job
--   per call, so a watch holds one row lock and cannot take part in a deadlock.

create table public.studio_job_watches (
  job_id uuid not null,
  watcher text not null,
  expires_at timestamptz not null,
  primary key (job_id, watcher),
  constraint studio_job_watches_watcher check (watcher ~ '^[a-z]-[0-9a-f]{12}$')
);
comment on table public.studio_job_watches is
  'studio-worker: jobs that an API process streams; their changes are NOTIFYed, others are not';

revoke all on table public.studio_job_watches from public, anon, authenticated;
grant all on table public.studio_job_watches to service_role;
alter table public.studio_job_watches enable row level security;
alter table public.studio_job_watches force row level security;
create policy studio_job_watches_service_all on public.studio_job_watches
  for all to service_role using (true) with check (true);
-- FORCE applies to the owner too (the functions below run as it).
do $owner$
begin
  execute format(
    'create policy studio_job_watches_owner on public.studio_job_watches to %I using (true) with check (true)',
    current_user);
end
$owner$;

-- Follow `job` from `watcher` until now() + ttl. Returns false when there is no such job.
create function public.studio_watch_job(job uuid, watcher text, ttl interval) returns boolean
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    -- Orders the watch against the job's transitions (see the header).
    perform 1 from public.studio_jobs j where j.id = studio_watch_job.job for share;
    if not found then
      return false;
    end if;
    insert into public.studio_job_watches as w (job_id, watcher, expires_at)
    values (studio_watch_job.job, studio_watch_job.watcher,
            now() + least(studio_watch_job.ttl, interval '1 hour'))
    on conflict on constraint studio_job_watches_pkey
      do update set expires_at = excluded.expires_at;
    return true;
  end
  $$;

-- Stop following `jobs` from `watcher`.
create function public.studio_unwatch_jobs(jobs uuid[], watcher text) returns void
  language sql
  security definer
  set search_path = ''
  as $$
    delete from public.studio_job_watches w
     where w.job_id = any(studio_unwatch_jobs.jobs) and w.watcher = studio_unwatch_jobs.watcher;
  $$;

-- Keep the watches of `jobs` by `watcher` for another `ttl`; delete `watcher`'s other watches
-- (jobs it stopped following while a write was in flight) and every watch that expired an hour
-- ago (crashed processes). Returns how many of `jobs` were still watched.
create function public.studio_refresh_watches(watcher text, jobs uuid[], ttl interval)
  returns integer
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    held integer;
  begin
    update public.studio_job_watches w
       set expires_at = now() + least(ttl, interval '1 hour')
     where w.watcher = studio_refresh_watches.watcher
       and w.job_id = any(studio_refresh_watches.jobs)
       and w.expires_at > now();
    get diagnostics held = row_count;
    delete from public.studio_job_watches w
     where (w.watcher = studio_refresh_watches.watcher
            and not w.job_id = any(studio_refresh_watches.jobs))
        or w.expires_at < now() - interval '1 hour';
    return held;
  end
  $$;

revoke all on function public.studio_watch_job(uuid, text, interval) from public, anon, authenticated;
revoke all on function public.studio_unwatch_jobs(uuid[], text) from public, anon, authenticated;
revoke all on function public.studio_refresh_watches(text, uuid[], interval) from public, anon, authenticated;
grant execute on function public.studio_watch_job(uuid, text, interval) to studio_api, service_role;
grant execute on function public.studio_unwatch_jobs(uuid[], text) to studio_api, service_role;
grant execute on function public.studio_refresh_watches(text, uuid[], interval) to studio_api, service_role;

-- The history trigger: 0023's function, announcing the status changes of watched jobs only.
create or replace function public.studio_jobs_after_update() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    became_pending boolean;
    changes text[];
    -- One probe per statement: with nobody following any job, no status change is announced.
    watched boolean := exists (select 1 from public.studio_job_watches);
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
                  where watched
                    and exists (select 1 from public.studio_job_watches w
                                 where w.job_id = r2.job_id and w.expires_at > now())
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

-- Progress changes: 0018's function, for watched jobs only.
create or replace function public.studio_jobs_changed() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    if not exists (select 1 from public.studio_job_watches) then
      return null;
    end if;
    perform pg_notify('studio_job_changes', json_build_array(json_build_object(
              'job', n.id, 'user', n.user_id, 'event', null, 'status', n.status,
              'attempt', n.attempt, 'progress', n.progress,
              'message', n.progress_message))::text)
      from old_rows o join new_rows n on n.id = o.id
     where n.status = o.status
       and (n.progress <> o.progress or n.progress_message is distinct from o.progress_message)
       and exists (select 1 from public.studio_job_watches w
                    where w.job_id = n.id and w.expires_at > now());
    return null;
  end
  $$;

-- The quota trigger's counts walk their indexes under their LIMITs, with or without statistics
-- (issue 19: tests/integration/trigger_plans.rs). Without fresh statistics, and in the generic
-- plan PL/pgSQL switches to after five calls, the counts of a user's unfinished and recent jobs
-- were planned as a bitmap over every job of the user or a sequential scan of the table, for
-- every insert by a user under a quota. The settings apply while the function runs (like its
-- search_path): two more entries in the settings it already switches per call.
alter function public.studio_jobs_quota() set enable_seqscan = off;
alter function public.studio_jobs_quota() set enable_bitmapscan = off;

select public.studio_mark_schema(27);
