-- Per-user admission quotas (issue 13): operators cap, per kind (and by default), how many
-- unfinished jobs a user may have and how many jobs a user may create in a period.
--
-- Rule: a row of `public.studio_quotas` names a kind, or `*` for every kind without a row of its
-- own. The kind's row replaces the default as a whole (a null limit there means "no limit", so a
-- row with both limits null exempts a kind from the default). The default applies to each kind
-- separately. For a new job of user U and kind K:
--   - max_unfinished N: refused when U already has N jobs of K pending or running;
--   - max_created N per P: refused when U already created N jobs of K within the last P
--     (a sliding window on created_at; jobs of every status count, jobs pruned since do not).
-- Jobs inserted by trusted roles count towards a user's quotas but are never refused.
-- A change to the table holds from the next insert on: the trigger reads it every time.
--
-- SQLSTATE PT429 (class PT is not used by PostgreSQL; PostgREST answers `PTxyz` with HTTP
-- status xyz, so supabase-js callers get a 429 too). The message names the quota, the kind and
-- the limit; DETAIL is machine-readable, space-separated key=value pairs:
--   quota=max_unfinished|max_created kind=<the job's kind> scope=kind|default limit=<N>
--   and, for max_created, per_seconds=<P> retry_after=<seconds until a slot frees>
-- HINT says the same for people. `control::quota` in the Rust crate parses it (a test checks
-- that both sides agree on the SQLSTATE and the keys).
--
-- Concurrency: before counting, the trigger takes a transaction-scoped advisory lock on
-- (user, kind), so concurrent inserts of one user and kind run the check one after the other,
-- each counting the rows the previous ones committed (the lock is released after the commit
-- is visible, and the counts run in a new snapshot). Earlier rows of the same statement
-- (`insert … select`, `Queue::enqueue_many`) are visible to a BEFORE ROW trigger's queries
-- and count. Other users and other kinds do not wait. A multi-row insert of several kinds takes
-- the locks in row order, so two such statements of one user in opposite orders can deadlock
-- (40P01, which callers retry as transient); single-kind statements cannot.
--
-- Trusted paths, decided by role, never by a setting a client could send: members of
-- `studio_worker` (the worker, the operator CLI, `Queue::enqueue`) and of `service_role`, and
-- superusers, bypass the check (the trigger's WHEN clause, so they do not even pay for the
-- call). Every other writer is checked: users through PostgREST and the job API (both run as
-- `authenticated` with the user's claims). A user's insert for someone else is left to RLS to
-- refuse (the check only runs for the caller's own rows, so it reveals nothing about others).
-- An insert repeating an idempotency key the user already used is not refused: it returns or
-- conflicts with the first job as before.
--
-- Role model:
--   anon, authenticated  nothing on the table (RLS forced, no grants): quotas are operators'.
--   studio_worker        select, insert, update, delete (`studio-worker quotas`).
--   service_role         all.

create table public.studio_quotas (
  kind text primary key,
  max_unfinished integer,
  max_created integer,
  per interval,
  updated_at timestamptz not null default now(),
  updated_by text,
  constraint studio_quotas_kind_format check (kind = '*' or kind ~ '^[a-z][a-z0-9_.-]{0,63}$'),
  constraint studio_quotas_max_unfinished_not_negative check (max_unfinished >= 0),
  constraint studio_quotas_max_created_positive check (max_created >= 1),
  constraint studio_quotas_per_range check (per between interval '1 second' and interval '366 days'),
  constraint studio_quotas_max_created_per check ((max_created is null) = (per is null))
);
comment on table public.studio_quotas is
  'studio-worker: per-user admission quotas by kind (`*`: the default), enforced at insert';

revoke all on table public.studio_quotas from public, anon, authenticated;
grant select, insert, update, delete on table public.studio_quotas to studio_worker;
grant all on table public.studio_quotas to service_role;

alter table public.studio_quotas enable row level security;
alter table public.studio_quotas force row level security;

create policy studio_quotas_worker_all on public.studio_quotas
  for all to studio_worker
  using (true) with check (true);
create policy studio_quotas_service_all on public.studio_quotas
  for all to service_role
  using (true) with check (true);
do $owner$
begin
  execute format(
    'create policy studio_quotas_owner on public.studio_quotas to %I using (true) with check (true)',
    current_user);
end
$owner$;

-- The unfinished count: small (only the live queue), and the claim's updates already change
-- `status`, so this adds no update that could have been HOT. The period count uses
-- studio_jobs_user_created_idx (user_id, created_at desc) and stops at the limit.
create index studio_jobs_user_kind_unfinished_idx
  on public.studio_jobs (user_id, kind)
  where status in ('pending', 'running');

-- Definer rights: users can neither read the quotas nor count rows by themselves; the function
-- only ever counts the inserting user's own jobs.
create function public.studio_jobs_quota() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    q public.studio_quotas;
    scope text;
    used bigint;
    oldest timestamptz;
    wait_seconds bigint;
  begin
    -- Another user's row (RLS refuses it next) or a kind the CHECK refuses next: not ours.
    if new.user_id is distinct from auth.uid()
       or new.kind !~ '^[a-z][a-z0-9_.-]{0,63}$' then
      return new;
    end if;

    select * into q from public.studio_quotas
     where kind in (new.kind, '*')
     order by kind = '*'
     limit 1;
    if not found or (q.max_unfinished is null and q.max_created is null) then
      return new;
    end if;
    scope := case when q.kind = '*' then 'default' else 'kind' end;

    perform pg_catalog.pg_advisory_xact_lock(
      pg_catalog.hashtext('studio_jobs.quota'),
      pg_catalog.hashtext(new.user_id::text || '/' || new.kind));

    if q.max_unfinished is not null then
      select count(*) into used from (
        select 1 from public.studio_jobs j
         where j.user_id = new.user_id and j.kind = new.kind
           and j.status in ('pending', 'running')
         limit q.max_unfinished) s;
      if used >= q.max_unfinished and not public.studio_jobs_quota_repeat(new) then
        raise exception 'quota exceeded: at most % unfinished % jobs per user', q.max_unfinished, new.kind
          using errcode = 'PT429',
                detail = format('quota=max_unfinished kind=%s scope=%s limit=%s',
                                new.kind, scope, q.max_unfinished),
                hint = 'wait until one of your unfinished jobs of this kind finishes, or cancel one';
      end if;
    end if;

    if q.max_created is not null then
      select count(*) into used from (
        select 1 from public.studio_jobs j
         where j.user_id = new.user_id and j.created_at > now() - q.per and j.kind = new.kind
         limit q.max_created) s;
      if used >= q.max_created and not public.studio_jobs_quota_repeat(new) then
        -- A slot frees when the max_created-th newest job of the window leaves it.
        select j.created_at into oldest from public.studio_jobs j
         where j.user_id = new.user_id and j.created_at > now() - q.per and j.kind = new.kind
         order by j.created_at desc
         offset q.max_created - 1 limit 1;
        wait_seconds := greatest(1, ceil(extract(epoch from
                          coalesce(oldest, now()) + q.per - now()))::bigint);
        raise exception 'quota exceeded: at most % % jobs per user every % seconds',
                        q.max_created, new.kind, extract(epoch from q.per)::bigint
          using errcode = 'PT429',
                detail = format('quota=max_created kind=%s scope=%s limit=%s per_seconds=%s retry_after=%s',
                                new.kind, scope, q.max_created,
                                extract(epoch from q.per)::bigint, wait_seconds),
                hint = format('try again in %s seconds', wait_seconds);
      end if;
    end if;
    return new;
  end
  $$;

-- Whether `job` repeats an idempotency key its user already used: that insert makes no new job
-- (it conflicts with the first one), so no quota refuses it.
create function public.studio_jobs_quota_repeat(job public.studio_jobs) returns boolean
  language sql stable
  set search_path = ''
  as $$
    select job.idempotency_key is not null and exists (
      select 1 from public.studio_jobs j
       where j.user_id = job.user_id and j.idempotency_key = job.idempotency_key)
  $$;

revoke all on function public.studio_jobs_quota() from public, anon, authenticated;
revoke all on function public.studio_jobs_quota_repeat(public.studio_jobs)
  from public, anon, authenticated;

-- `10_known_kind` (another check on new rows) runs first: BEFORE triggers fire in name order.
create trigger studio_jobs_20_quota
  before insert on public.studio_jobs
  for each row
  when (not (pg_catalog.pg_has_role('studio_worker', 'MEMBER')
             or pg_catalog.pg_has_role('service_role', 'MEMBER')))
  execute function public.studio_jobs_quota();

select public.studio_mark_schema(16);
