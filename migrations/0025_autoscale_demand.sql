-- Autoscaling on runnable demand (issue 21): how many worker replicas the queue needs now, by the
-- same rules the claim uses, in one number an autoscaler (KEDA's PostgreSQL scaler, Prometheus)
-- can read with no worker running.
--
-- Rule: `public.studio_autoscale_demand(kinds, per_replica, horizon)` returns
--   ceil((running + startable) / per_replica)
-- for the kinds in `kinds` (NULL: every kind), where
--   running    jobs with a live lease (status running, lease_expires_at >= now()), paused kinds
--              included: they run until they finish, on some replica;
--   startable  what claims could start by now() + horizon:
--              - pending jobs with run_at <= now() + horizon, plus running jobs whose lease
--                expired and that the rescuer will return to pending (attempts left, no
--                cancellation requested), plus the fires of schedules due by now() + horizon
--                (`studio_schedule_next_fires`, one job each, fresh rows only);
--              - none of a paused kind (0013);
--              - per kind, at most `max_running` minus its live running jobs;
--              - per kind, at most what its start rate leaves in the window that ends at
--                now() + horizon (`studio_kind_starts`, 0015; with horizon 0, the claim's own
--                window);
--              - with a per-user cap (`worker.max_running_per_user`), only jobs of users below
--                it count, and the total is at most the sum over users of what each may still
--                start (cap minus the user's live running jobs, of every kind, as the fair
--                claim counts them).
-- The result bounds what claims can start from above, and is 0 when nothing can start: a
-- replica started because of it finds something to claim (within horizon). Where limits mix in
-- ways one count cannot follow exactly (a user's jobs spread over kinds with separate caps), it
-- errs high, never low: work is never left waiting for a replica that is not started.
--
-- Where the limits come from: `kinds.<k>.max_running`, `kinds.<k>.rate_limit` and
-- `worker.max_running_per_user` are worker configuration. Each process that loads a
-- configuration (`run` replicas, the always-on `scheduler`) publishes its kinds' limits into
-- `studio_kind_limits` when it starts (one row per configured kind, NULL for no limit), so the
-- database knows them while no worker runs. Rows are not expired: the last publication stands
-- (a deploy that changes a limit republishes it). A per-user cap counts only when every kind
-- asked about has one (the largest is used); otherwise it is left out (errs high). Likewise the
-- scheduler publishes each schedule's next fire time into `studio_schedule_next_fires`, with a
-- `fresh_until` it refreshes, so a schedule removed from the configuration stops counting.
--
-- Cost: the pending and running rows of the kinds asked about (partial indexes on status), never
-- the finished history; see the EXPLAIN test (tests/integration/autoscale.rs).
--
-- SQLSTATE: 22023 (invalid_parameter_value) for per_replica < 1 or a negative horizon.
--
-- Role model:
--   studio_autoscaler  NOLOGIN. EXECUTE on this function and nothing else (no table, no other
--                      function). Operators grant it to the login role the autoscaler connects
--                      as (`create role keda login password '…' in role studio_autoscaler;`).
--   studio_worker      EXECUTE (the `/metrics` gauge of `run` and `scheduler`); writes
--                      `studio_kind_limits` and `studio_schedule_next_fires`.
--   studio_api         EXECUTE (the `/metrics` gauge of `studio-worker api`): counts only.
--   service_role       all on the tables, EXECUTE.
--   anon, authenticated nothing.
-- The function runs as its owner (the migrating role), which reads the tables through their
-- owner policies (FORCE RLS), or bypasses RLS (superuser, Supabase's `postgres`).

do $roles$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'studio_autoscaler') then
    begin
      create role studio_autoscaler nologin;
    exception when duplicate_object or unique_violation then
      null; -- created concurrently by another database's migration
    end;
  end if;
end
$roles$;

create table public.studio_kind_limits (
  kind text primary key,
  -- kinds.<k>.max_running: running jobs of the kind at once, all replicas together
  max_running integer,
  -- kinds.<k>.rate_limit: rate_count starts in any window of rate_period
  rate_count integer,
  rate_period interval,
  -- worker.max_running_per_user of the processes serving the kind (fair order only)
  max_running_per_user integer,
  published_at timestamptz not null default now(),
  published_by text,
  constraint studio_kind_limits_kind_format check (kind ~ '^[a-z][a-z0-9_.-]{0,63}$'),
  constraint studio_kind_limits_max_running_positive check (max_running >= 1),
  constraint studio_kind_limits_rate check ((rate_count is null) = (rate_period is null)
                                            and rate_count >= 1 and rate_period > interval '0'),
  constraint studio_kind_limits_per_user_positive check (max_running_per_user >= 1)
);
comment on table public.studio_kind_limits is
  'studio-worker: the claim limits of each kind as the configuration last published them (autoscaling demand)';

create table public.studio_schedule_next_fires (
  schedule text primary key,
  kind text not null,
  user_id uuid not null,
  next_fire_at timestamptz not null,
  -- the scheduler refreshes the row (at least every minute); a stale row no longer counts
  fresh_until timestamptz not null,
  constraint studio_schedule_next_fires_schedule_format check (schedule ~ '^[a-z][a-z0-9_.-]{0,63}$')
);
comment on table public.studio_schedule_next_fires is
  'studio-worker: each schedule''s next fire time, as its scheduler last published it (autoscaling demand)';

revoke all on table public.studio_kind_limits from public, anon, authenticated;
revoke all on table public.studio_schedule_next_fires from public, anon, authenticated;
grant select, insert, update on table public.studio_kind_limits to studio_worker;
grant select, insert, update, delete on table public.studio_schedule_next_fires to studio_worker;
grant all on table public.studio_kind_limits to service_role;
grant all on table public.studio_schedule_next_fires to service_role;

alter table public.studio_kind_limits enable row level security;
alter table public.studio_kind_limits force row level security;
alter table public.studio_schedule_next_fires enable row level security;
alter table public.studio_schedule_next_fires force row level security;

create policy studio_kind_limits_worker_all on public.studio_kind_limits
  for all to studio_worker using (true) with check (true);
create policy studio_kind_limits_service_all on public.studio_kind_limits
  for all to service_role using (true) with check (true);
create policy studio_schedule_next_fires_worker_all on public.studio_schedule_next_fires
  for all to studio_worker using (true) with check (true);
create policy studio_schedule_next_fires_service_all on public.studio_schedule_next_fires
  for all to service_role using (true) with check (true);

-- FORCE applies policies to the owner too: the owner (whose rights the demand function runs
-- with) gets its own policies, here and on the tables the function reads that have none yet.
do $owner$
declare
  t text;
begin
  foreach t in array array['studio_kind_limits', 'studio_schedule_next_fires', 'studio_jobs',
                           'studio_paused_kinds', 'studio_kind_starts'] loop
    if not exists (
      select 1 from pg_catalog.pg_policies p
       where p.schemaname = 'public' and p.tablename = t
         and p.roles @> array[current_user::name] and p.cmd in ('ALL', 'SELECT')
    ) then
      execute format('create policy %I on public.%I for select to %I using (true)',
                     t || '_autoscale_owner', t, current_user);
    end if;
  end loop;
end
$owner$;

create function public.studio_autoscale_demand(
  kinds text[],
  per_replica integer,
  horizon interval default interval '0'
) returns integer
  language plpgsql
  stable
  security definer
  set search_path = ''
  as $$
  declare
    t timestamptz := pg_catalog.now();
    upto timestamptz;
    user_cap integer;
    jobs bigint;
  begin
    if per_replica is null or per_replica < 1 then
      raise exception 'per_replica must be at least 1 (got %)', per_replica
        using errcode = 'invalid_parameter_value';
    end if;
    if horizon < interval '0' then
      raise exception 'horizon must not be negative (got %)', horizon
        using errcode = 'invalid_parameter_value';
    end if;
    upto := t + coalesce(horizon, interval '0');

    -- A per-user cap binds only when every kind asked about has one (see the header).
    select case when count(*) > 0 and count(*) = count(l.max_running_per_user)
                then max(l.max_running_per_user) end
      into user_cap
      from (select distinct k from pg_catalog.unnest(kinds) as k) a
      left join public.studio_kind_limits l on l.kind = a.k;
    if kinds is null then
      user_cap := null;
    end if;

    with work as (
      -- due pending jobs
      select j.user_id, j.kind, false as live
        from public.studio_jobs j
       where j.status = 'pending' and j.run_at <= upto
         and (kinds is null or j.kind = any(kinds))
      union all
      -- running: a live lease, or an expired one the rescuer returns to pending
      select j.user_id, j.kind, j.lease_expires_at >= t
        from public.studio_jobs j
       where j.status = 'running'
         and (kinds is null or j.kind = any(kinds))
         and (j.lease_expires_at >= t
              or (j.cancel_requested_at is null and j.attempt < j.max_attempts))
      union all
      -- schedules due within the horizon
      select s.user_id, s.kind, false
        from public.studio_schedule_next_fires s
       where s.next_fire_at <= upto and s.fresh_until > t
         and (kinds is null or s.kind = any(kinds))
    ),
    by_user_kind as (
      select w.user_id, w.kind, count(*) filter (where w.live) as live,
             count(*) filter (where not w.live) as due
        from work w
       group by w.user_id, w.kind
    ),
    users as (
      -- what each user may still start: the cap minus their live running jobs of every kind
      select u.user_id, greatest(0, user_cap - coalesce(r.live, 0)) as room
        from (select distinct b.user_id from by_user_kind b where b.due > 0) u
        left join lateral (
          select count(*) as live from public.studio_jobs j
           where j.user_id = u.user_id and j.status = 'running' and j.lease_expires_at >= t
        ) r on true
       where user_cap is not null
    ),
    by_kind as (
      select b.kind, sum(b.live) as live,
             sum(b.due) filter (where user_cap is null or us.room > 0) as due
        from by_user_kind b
        left join users us on us.user_id = b.user_id
       group by b.kind
    ),
    startable as (
      select k.kind, k.live,
             -- least() skips NULLs: a limit that is not set does not bind
             case when p.kind is not null then 0
                  else greatest(0, least(
                    coalesce(k.due, 0),
                    l.max_running - k.live,
                    l.rate_count - coalesce((
                      select sum(s.jobs) from public.studio_kind_starts s
                       where s.kind = k.kind and s.started_at > upto - l.rate_period), 0)))
             end as n
        from by_kind k
        left join public.studio_paused_kinds p on p.kind = k.kind
        left join public.studio_kind_limits l on l.kind = k.kind
    ),
    by_users as (
      -- the users' bound, over unpaused kinds only
      select sum(least(d.due, us.room)) as n
        from users us
        join (select b.user_id, sum(b.due) as due from by_user_kind b
               where not exists (select 1 from public.studio_paused_kinds p where p.kind = b.kind)
               group by b.user_id) d on d.user_id = us.user_id
    )
    select coalesce((select sum(s.live) from startable s), 0)
           + case when user_cap is null then coalesce((select sum(s.n) from startable s), 0)
                  else least(coalesce((select sum(s.n) from startable s), 0),
                             coalesce((select n from by_users), 0)) end
      into jobs;

    return ceil(jobs::numeric / per_replica)::integer;
  end
  $$;

comment on function public.studio_autoscale_demand(text[], integer, interval) is
  'studio-worker: worker replicas needed for the runnable work of these kinds (NULL: all), '
  'per_replica jobs each, counting work due within horizon';

revoke all on function public.studio_autoscale_demand(text[], integer, interval)
  from public, anon, authenticated;
grant usage on schema public to studio_autoscaler;
grant execute on function public.studio_autoscale_demand(text[], integer, interval)
  to studio_autoscaler, studio_worker, studio_api, service_role;

select public.studio_mark_schema(25);
