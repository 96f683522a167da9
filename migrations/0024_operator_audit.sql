-- The operators' audit trail and the dashboard's per-minute rollup (issue 20).
--
-- Rule (audit): every operator action, from the dashboard or the CLI, is one row of
-- `studio_operator_actions`: who (the operator's configured name, or the CLI's user), from where
-- (`dashboard` or `cli`) and with which role, what (`job.retry`, `jobs.cancel`, `kind.pause`,
-- ...), on which kind or job, with which filter (a bulk action's), and how many rows it changed.
-- The jobs an action changed are listed in `studio_operator_action_jobs`, so a job's history
-- can name the operator who retried or cancelled it without touching the history trigger (the
-- hot path's): the dashboard and `jobs why`/`show` merge both. Rows are never deleted.
--
-- Rule (rollup): `studio_job_minutes` holds, per minute and kind, how many jobs finished in
-- each outcome. It is written off the hot path: the dashboard's own task recounts the last few
-- minutes from `studio_jobs_finished_idx` every few seconds (an upsert, so replicas doing it
-- together agree) and deletes minutes older than eight days. The charts read at most
-- 1,440 minutes per kind, whatever the table holds; pruning jobs does not change them.
--
-- Index: `studio_jobs_failed_idx` orders failed and cancelled jobs by when they finished, for
-- the dashboard's lists and bulk retries. Partial: a job enters it only when it fails or is
-- cancelled, never on a claim or a success.
--
-- Role model:
--   anon, authenticated  nothing (RLS forced, no grants): operators' business.
--   studio_worker        actions, action jobs: select, insert (and update of `rows`, which a
--                        bulk action raises batch by batch); minutes: select, insert, update,
--                        delete (the dashboard and the CLI connect as it).
--   service_role         all, as on the job tables.

create table public.studio_operator_actions (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor text not null,
  source text not null,
  role text,
  action text not null,
  kind text,
  job_id uuid,
  filter jsonb,
  rows bigint not null default 0,
  detail text,
  constraint studio_operator_actions_source check (source in ('dashboard', 'cli')),
  constraint studio_operator_actions_role
    check (role is null or role in ('viewer', 'operator', 'admin')),
  constraint studio_operator_actions_actor_length check (length(actor) between 1 and 200),
  constraint studio_operator_actions_action_format check (action ~ '^[a-z][a-z._]{0,63}$'),
  constraint studio_operator_actions_detail_length check (length(detail) <= 2000)
);
comment on table public.studio_operator_actions is
  'studio-worker: one row per operator action (dashboard and CLI): who, what, when, how many rows';

create index studio_operator_actions_job_idx
  on public.studio_operator_actions (job_id) where job_id is not null;

create table public.studio_operator_action_jobs (
  job_id uuid not null,
  action_id bigint not null references public.studio_operator_actions (id) on delete cascade,
  primary key (job_id, action_id)
);
comment on table public.studio_operator_action_jobs is
  'studio-worker: the jobs each operator action changed';
create index studio_operator_action_jobs_action_idx
  on public.studio_operator_action_jobs (action_id);

create table public.studio_job_minutes (
  minute timestamptz not null,
  kind text not null,
  succeeded integer not null default 0,
  failed integer not null default 0,
  cancelled integer not null default 0,
  primary key (minute, kind),
  constraint studio_job_minutes_whole check (minute = date_trunc('minute', minute))
);
comment on table public.studio_job_minutes is
  'studio-worker: jobs finished per minute and kind (the dashboard''s charts), kept eight days';

create index studio_jobs_failed_idx
  on public.studio_jobs (finished_at desc, id desc)
  where status in ('failed', 'cancelled');

revoke all on table public.studio_operator_actions from public, anon, authenticated;
revoke all on table public.studio_operator_action_jobs from public, anon, authenticated;
revoke all on table public.studio_job_minutes from public, anon, authenticated;
revoke all on sequence public.studio_operator_actions_id_seq from public, anon, authenticated;
grant select, insert on table public.studio_operator_actions to studio_worker;
-- a bulk action adds each batch's rows to its own row, in the batch's transaction
grant update (rows) on table public.studio_operator_actions to studio_worker;
grant select, insert on table public.studio_operator_action_jobs to studio_worker;
grant select, insert, update, delete on table public.studio_job_minutes to studio_worker;
grant all on table public.studio_operator_actions to service_role;
grant all on table public.studio_operator_action_jobs to service_role;
grant all on table public.studio_job_minutes to service_role;
grant all on sequence public.studio_operator_actions_id_seq to service_role;

alter table public.studio_operator_actions enable row level security;
alter table public.studio_operator_actions force row level security;
alter table public.studio_operator_action_jobs enable row level security;
alter table public.studio_operator_action_jobs force row level security;
alter table public.studio_job_minutes enable row level security;
alter table public.studio_job_minutes force row level security;

create policy studio_operator_actions_worker on public.studio_operator_actions
  for all to studio_worker using (true) with check (true);
create policy studio_operator_actions_service on public.studio_operator_actions
  for all to service_role using (true) with check (true);
create policy studio_operator_action_jobs_worker on public.studio_operator_action_jobs
  for all to studio_worker using (true) with check (true);
create policy studio_operator_action_jobs_service on public.studio_operator_action_jobs
  for all to service_role using (true) with check (true);
create policy studio_job_minutes_worker on public.studio_job_minutes
  for all to studio_worker using (true) with check (true);
create policy studio_job_minutes_service on public.studio_job_minutes
  for all to service_role using (true) with check (true);
-- FORCE applies policies to the owner too (the role running the migrations, which may also run
-- the operator commands), so the owner gets its own policy, as in 0013.
do $owner$
begin
  execute format(
    'create policy studio_operator_actions_owner on public.studio_operator_actions to %I using (true) with check (true)',
    current_user);
  execute format(
    'create policy studio_operator_action_jobs_owner on public.studio_operator_action_jobs to %I using (true) with check (true)',
    current_user);
  execute format(
    'create policy studio_job_minutes_owner on public.studio_job_minutes to %I using (true) with check (true)',
    current_user);
end
$owner$;

select public.studio_mark_schema(24);
