-- The dashboard's sessions in the database, and the per-user summary of the last hour that its
-- Users page reads (issue 20).
--
-- Rule (sessions): a signed-in operator holds a random 256-bit id in a cookie; the database
-- keeps only its SHA-256 (`id_sha256`), so neither a read of this table nor a backup hands out
-- a cookie. Every replica of the dashboard reads the same rows: a restart signs nobody out and
-- a load balancer needs no pinning. A row names the operator and a tag of the token they
-- signed in with (`token_tag`, a hash of the configured hash): the dashboard accepts the
-- session only while that operator is still configured with that token, and takes the role
-- from its configuration at each request. `expires_at` is set from the database's clock at
-- sign-in; expired rows are never accepted and are deleted at the next sign-in. Signing out
-- deletes the row; `delete from public.studio_dashboard_sessions where operator = '...'` signs
-- an operator out everywhere. The CSRF token is derived from the id, so it is not stored.
--
-- Rule (user hour): `studio_user_hour` holds, per user, the jobs that finished in the hour
-- before `computed_at`, and their wait from due to start (p50, p95, seconds). The dashboard's
-- rollup task recomputes it once a minute (one replica at a time, under 0024's rollup lock),
-- from `studio_jobs_finished_idx`: the cost is the hour's finished jobs, once a minute, off the
-- page path; the Users page reads at most a hundred rows by primary key, whatever the table
-- holds.
--
-- Locks: two new tables; nothing on `studio_jobs` changes.
--
-- Role model:
--   anon, authenticated  nothing (RLS forced, no grants).
--   studio_worker        sessions: select, insert, delete (the dashboard connects as a member);
--                        user hour: select, insert, delete.
--   service_role         all.

create table public.studio_dashboard_sessions (
  id_sha256 bytea primary key,
  operator text not null,
  token_tag bytea not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint studio_dashboard_sessions_id_length check (length(id_sha256) = 32),
  constraint studio_dashboard_sessions_tag_length check (length(token_tag) = 32),
  constraint studio_dashboard_sessions_operator_length check (length(operator) between 1 and 200)
);
comment on table public.studio_dashboard_sessions is
  'studio-worker: signed-in dashboard operators (SHA-256 of the cookie''s id, never the id)';

create table public.studio_user_hour (
  user_id uuid primary key,
  finished integer not null,
  wait_p50 double precision,
  wait_p95 double precision,
  computed_at timestamptz not null
);
comment on table public.studio_user_hour is
  'studio-worker: per user, jobs finished in the hour before computed_at and their waits (the dashboard''s Users page)';

revoke all on table public.studio_dashboard_sessions from public, anon, authenticated;
revoke all on table public.studio_user_hour from public, anon, authenticated;
grant select, insert, delete on table public.studio_dashboard_sessions to studio_worker;
grant select, insert, delete on table public.studio_user_hour to studio_worker;
grant all on table public.studio_dashboard_sessions to service_role;
grant all on table public.studio_user_hour to service_role;

alter table public.studio_dashboard_sessions enable row level security;
alter table public.studio_dashboard_sessions force row level security;
alter table public.studio_user_hour enable row level security;
alter table public.studio_user_hour force row level security;

create policy studio_dashboard_sessions_worker on public.studio_dashboard_sessions
  for all to studio_worker using (true) with check (true);
create policy studio_dashboard_sessions_service on public.studio_dashboard_sessions
  for all to service_role using (true) with check (true);
create policy studio_user_hour_worker on public.studio_user_hour
  for all to studio_worker using (true) with check (true);
create policy studio_user_hour_service on public.studio_user_hour
  for all to service_role using (true) with check (true);
-- FORCE applies policies to the owner too (as in 0013 and 0024).
do $owner$
begin
  execute format(
    'create policy studio_dashboard_sessions_owner on public.studio_dashboard_sessions to %I using (true) with check (true)',
    current_user);
  execute format(
    'create policy studio_user_hour_owner on public.studio_user_hour to %I using (true) with check (true)',
    current_user);
end
$owner$;

select public.studio_mark_schema(26);
