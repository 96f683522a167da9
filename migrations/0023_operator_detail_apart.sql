-- What only operators read leaves the users' tables (issue 22, item 12).
--
-- Until now the users' tables held operators' columns hidden by column grants (0012):
-- `studio_jobs.locked_by`, `studio_jobs.error_detail`, `studio_job_events.worker` and
-- `studio_job_events.detail`. So supabase-js's commonest calls, `insert(...).select()` and
-- `select('*')` (PostgREST's `returning *` / `select *`), were refused with 42501. Now the users'
-- tables hold only what users may read, and `authenticated` reads every column of its own rows:
--
-- - `studio_job_failures` (new, operators only): one row per failed attempt that left an
--   operator's detail (stderr tail, paths, response bodies, which worker lost its lease), keyed
--   by (job_id, attempt). The worker writes it in the same statement that records the failure
--   (the failure path only: a success writes nothing more than before). `error_detail` and
--   `studio_job_events.detail` are dropped; what they held is copied here first.
-- - Worker identities are opaque from now on (`w-` and 12 hex digits, random per process start;
--   the worker logs its host and pid beside it at start). `locked_by` and the history's `worker`
--   become readable, and the identities already stored (`<host>-<pid>-<random>`) are replaced by
--   the same opaque form (`w-` || 12 hex digits of their md5), consistently, so a worker's jobs
--   still group together.
-- - Every column added to these two tables from now on is readable by their owners: put what
--   users must not read in an operator-only table like the one below.
--
-- Running workers must be stopped first: a pre-0023 worker writes the dropped columns. The
-- migration refuses while a replica's registration is fresh (studio_kind_replicas), with the fix;
-- workers drain on SIGTERM and deregister. The frontend and the job API keep working throughout.
--
-- Locks (measured on 1,000,000 jobs with 2,000,000 history rows, docs/decisions.md): the copies
-- and the rewrite of stored identities take row locks only (users' inserts and reads go on);
-- the column drops are catalog changes (no table rewrite) and come last, so the ACCESS
-- EXCLUSIVE locks are held only for the milliseconds until commit. `lock_timeout` bounds how
-- long the drops wait behind a long query (which would otherwise hold up everyone queued behind
-- them): the migration then fails, changing nothing, and is run again.

set local lock_timeout = '10s';

do $guard$
declare
  live text;
begin
  select string_agg(distinct worker, ', ') into live
    from public.studio_kind_replicas where fresh_until > now();
  if live is not null then
    raise exception 'studio-worker migration 0023: workers are running (%)', live
      using errcode = 'object_in_use',
            hint = 'stop every studio-worker replica first (SIGTERM: they drain and deregister), '
                   'then migrate and start the new version; a replica killed without draining '
                   'stops counting within 3 x worker.rescue_interval';
  end if;
end
$guard$;

create table public.studio_job_failures (
  job_id uuid not null,
  attempt integer not null,
  detail text not null,
  created_at timestamptz not null default now(),
  primary key (job_id, attempt),
  constraint studio_job_failures_detail_size check (length(detail) <= 16384)
);
comment on table public.studio_job_failures is
  'studio-worker: operators'' detail of failed attempts (stderr tails, paths, hosts); users cannot read it';

revoke all on table public.studio_job_failures from public, anon, authenticated;
grant select, insert, update, delete on table public.studio_job_failures to studio_worker;
grant all on table public.studio_job_failures to service_role;
alter table public.studio_job_failures enable row level security;
alter table public.studio_job_failures force row level security;
create policy studio_job_failures_worker_all on public.studio_job_failures
  for all to studio_worker using (true) with check (true);
create policy studio_job_failures_service_all on public.studio_job_failures
  for all to service_role using (true) with check (true);
-- FORCE applies to the owner too (the triggers below run as it; it may run operator commands).
do $owner$
begin
  execute format(
    'create policy studio_job_failures_owner on public.studio_job_failures to %I using (true) with check (true)',
    current_user);
end
$owner$;

-- What the dropped columns held. A job's current detail belongs to its current attempt; the
-- history's details to the attempts they ended (a later duplicate says the same).
insert into public.studio_job_failures (job_id, attempt, detail, created_at)
select id, attempt, left(error_detail, 16384), updated_at
  from public.studio_jobs
 where error_detail is not null
on conflict do nothing;
insert into public.studio_job_failures (job_id, attempt, detail, created_at)
select job_id, attempt, left(detail, 16384), created_at
  from public.studio_job_events
 where detail is not null
on conflict do nothing;

-- Stored identities become opaque (the same mapping everywhere, so they still match).
update public.studio_job_events
   set worker = 'w-' || left(md5(worker), 12)
 where worker is not null and worker !~ '^w-[0-9a-f]{12}$';
update public.studio_jobs
   set locked_by = 'w-' || left(md5(locked_by), 12)
 where status = 'running' and locked_by !~ '^w-[0-9a-f]{12}$';

-- The history trigger without the detail (0018's function otherwise verbatim: same rules, same
-- notifications, same owner, security definer and search_path).
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

-- Deleted jobs take their failures with them, as they take their history (0003).
create or replace function public.studio_jobs_after_delete() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    delete from public.studio_job_events e using old_rows o where e.job_id = o.id;
    delete from public.studio_job_failures f using old_rows o where f.job_id = o.id;
    return null;
  end
  $$;

-- Last, so that the ACCESS EXCLUSIVE locks are held only until commit: catalog changes, no
-- rewrite (the space is reclaimed as rows are updated, or by VACUUM FULL if ever wanted).
alter table public.studio_jobs drop column error_detail;
alter table public.studio_job_events drop column detail;

-- Users read every column of their own rows (RLS still decides which rows): `select *` and
-- `returning *` work. Inserts keep their column grants (0004, 0008).
grant select on table public.studio_jobs to authenticated;
grant select on table public.studio_job_events to authenticated;

select public.studio_mark_schema(23);
