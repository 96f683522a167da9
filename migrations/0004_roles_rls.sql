-- Roles, grants and row level security for the job tables.
--
-- Role model:
--   anon           nothing.
--   authenticated  reads its own jobs and their history; inserts its own jobs as pending, setting
--                  only id, user_id (must be its own), kind and input; cancels its own jobs through
--                  public.cancel_studio_job(). No UPDATE, DELETE or TRUNCATE.
--   studio_worker  NOLOGIN role for the daemon: all users' jobs, but only the columns and
--                  commands the worker needs, on these two tables only. Operators grant it to the
--                  login role the daemon connects as (the direct-connection "service role").
--   service_role   full access to both tables (BYPASSRLS on Supabase; explicit policies here so
--                  it also holds where the shim could not grant BYPASSRLS).
--
-- Grants come first: a policy never takes back a grant, and a missing grant fails with 42501
-- before any policy runs. Supabase's default privileges give anon/authenticated ALL on every new
-- table, function and sequence in public, so each is revoked explicitly.

do $roles$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'studio_worker') then
    begin
      create role studio_worker nologin;
    exception when duplicate_object or unique_violation then
      null; -- created concurrently by another database's migration
    end;
  end if;
end
$roles$;

revoke all on table public.studio_jobs from public, anon, authenticated;
revoke all on table public.studio_job_events from public, anon, authenticated;
revoke all on sequence public.studio_job_events_id_seq from public, anon, authenticated;

-- authenticated
grant usage on schema public to authenticated;
grant select on table public.studio_jobs to authenticated;
grant insert (id, user_id, kind, input) on table public.studio_jobs to authenticated;
grant select on table public.studio_job_events to authenticated;

-- studio_worker
grant usage on schema public to studio_worker;
grant select, insert, delete on table public.studio_jobs to studio_worker;
grant update (
  status, priority, run_at, attempt, max_attempts, progress, progress_message, result, error,
  locked_by, lease_expires_at, cancel_requested_at, updated_at, started_at, finished_at
) on table public.studio_jobs to studio_worker;
grant select on table public.studio_job_events to studio_worker;

-- service_role
grant usage on schema public to service_role;
grant all on table public.studio_jobs to service_role;
grant all on table public.studio_job_events to service_role;
grant all on sequence public.studio_job_events_id_seq to service_role;

alter table public.studio_jobs enable row level security;
alter table public.studio_jobs force row level security;
alter table public.studio_job_events enable row level security;
alter table public.studio_job_events force row level security;

-- `(select auth.uid())` is evaluated once per statement (an InitPlan), not once per row.
create policy studio_jobs_owner_select on public.studio_jobs
  for select to authenticated
  using ((select auth.uid()) = user_id);

create policy studio_jobs_owner_insert on public.studio_jobs
  for insert to authenticated
  with check ((select auth.uid()) = user_id and status = 'pending');

create policy studio_job_events_owner_select on public.studio_job_events
  for select to authenticated
  using ((select auth.uid()) = user_id);

create policy studio_jobs_worker_all on public.studio_jobs
  for all to studio_worker
  using (true) with check (true);

create policy studio_job_events_worker_select on public.studio_job_events
  for select to studio_worker
  using (true);

create policy studio_jobs_service_all on public.studio_jobs
  for all to service_role
  using (true) with check (true);

create policy studio_job_events_service_all on public.studio_job_events
  for all to service_role
  using (true) with check (true);

-- Cancellation for end users: their own pending job is cancelled at once; their own running job
-- gets cancel_requested_at, which wakes the worker that runs it. Definer rights because users
-- hold no UPDATE grant; the caller is identified by auth.uid(), never by an argument.
create function public.cancel_studio_job(job_id uuid) returns public.studio_jobs
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    caller uuid := auth.uid();
    job public.studio_jobs;
  begin
    if caller is null then
      raise exception 'cancel_studio_job: not signed in'
        using errcode = 'insufficient_privilege';
    end if;

    select * into job
      from public.studio_jobs j
     where j.id = cancel_studio_job.job_id and j.user_id = caller
       for update;
    if not found then
      raise exception 'cancel_studio_job: job % not found', cancel_studio_job.job_id
        using errcode = 'no_data_found';
    end if;

    if job.status = 'pending' then
      update public.studio_jobs j
         set status = 'cancelled', cancel_requested_at = now(), finished_at = now(),
             updated_at = now(), error = 'cancelled by user'
       where j.id = job.id
      returning * into job;
    elsif job.status = 'running' then
      update public.studio_jobs j
         set cancel_requested_at = coalesce(j.cancel_requested_at, now()), updated_at = now()
       where j.id = job.id
      returning * into job; -- the update trigger notifies the worker running it
    else
      raise exception 'cancel_studio_job: job % has already finished (%)', job.id, job.status
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    return job;
  end
  $$;

revoke all on function public.cancel_studio_job(uuid) from public, anon, authenticated;
grant execute on function public.cancel_studio_job(uuid) to authenticated;

-- sqlx's bookkeeping table lives in the migrating role's schema (public on Supabase), where the
-- default privileges would expose it through the Data API.
do $sqlx$
begin
  if to_regclass('_sqlx_migrations') is not null then
    execute format('revoke all on table %s from anon, authenticated',
                   to_regclass('_sqlx_migrations'));
    execute format('alter table %s enable row level security', to_regclass('_sqlx_migrations'));
  end if;
end
$sqlx$;
