-- Schedule fires (issue 13): periodic jobs from `[schedules.<name>]`, one job per schedule and
-- fire time, however many replicas run the scheduler.
--
-- Rule: a schedule's fire time is enqueued at most once. The row here is inserted in the same
-- statement as its job (`insert … on conflict do nothing`, then the job only if the row was
-- inserted), so a row exists exactly when its job was created. The fire time is the scheduled
-- instant (UTC), never the moment a replica woke up, so replicas that wake at different moments
-- for the same fire time compute the same key.
-- SQLSTATE: none raised to callers. Two replicas inserting the same (schedule, fire_time) meet
-- on the primary key: the second waits for the first to commit and then inserts nothing
-- (`on conflict do nothing`), so it creates no job either. If the first rolls back (say, the
-- owner is not in auth.users: 23503 on the job's foreign key), the row goes with it.
-- Rows outlive their jobs: pruning a job does not make its fire time fire again, and the
-- latest row per schedule is what `studio-worker schedules` shows as its last fire (and where
-- catch-up after downtime starts from). job_id is therefore not a foreign key. Retention
-- deletes old rows but never a schedule's latest: only fire times after the latest row can
-- ever be enqueued, so older rows are history, not part of the rule.
--
-- Role model:
--   anon, authenticated  nothing (RLS forced, no grants): schedules are operators'. Users see
--                        the scheduled jobs themselves, like any job they own.
--   studio_worker        select and insert (the scheduler and `studio-worker schedules`),
--                        delete (retention: old rows, never a schedule's latest).
--   service_role         all, as on the job tables.

create table public.studio_schedule_fires (
  schedule text not null,
  fire_time timestamptz not null,
  job_id uuid not null,
  created_at timestamptz not null default now(),
  primary key (schedule, fire_time),
  -- the names `[schedules.<name>]` accepts (the same rule as kinds)
  constraint studio_schedule_fires_schedule_format check (schedule ~ '^[a-z][a-z0-9_.-]{0,63}$')
);
comment on table public.studio_schedule_fires is
  'studio-worker: one row per schedule and fire time that was enqueued (the job it created)';

revoke all on table public.studio_schedule_fires from public, anon, authenticated;
grant select, insert, delete on table public.studio_schedule_fires to studio_worker;
grant all on table public.studio_schedule_fires to service_role;

alter table public.studio_schedule_fires enable row level security;
alter table public.studio_schedule_fires force row level security;

create policy studio_schedule_fires_worker_read on public.studio_schedule_fires
  for select to studio_worker
  using (true);
create policy studio_schedule_fires_worker_insert on public.studio_schedule_fires
  for insert to studio_worker
  with check (true);
create policy studio_schedule_fires_worker_delete on public.studio_schedule_fires
  for delete to studio_worker
  using (true);
create policy studio_schedule_fires_service_all on public.studio_schedule_fires
  for all to service_role
  using (true) with check (true);
-- FORCE applies policies to the owner too (the role running the migrations, which may also run
-- the operator commands), so the owner gets its own policy, as in 0013.
do $owner$
begin
  execute format(
    'create policy studio_schedule_fires_owner on public.studio_schedule_fires to %I using (true) with check (true)',
    current_user);
end
$owner$;

select public.studio_mark_schema(14);
