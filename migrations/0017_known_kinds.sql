-- Known kinds, and the replicas that serve them (issue 13).
--
-- Rule: a job can only be inserted for a known kind. A kind becomes known when an operator
-- declares it (`studio-worker kinds declare K`, ahead of its workers) or when a replica that
-- serves it starts (each replica registers its configured kinds). It stays known while its
-- replicas restart or are scaled to zero, so a deploy never makes inserts fail; it stops being
-- known only when an operator forgets it (`kinds forget K`, refused while a live replica serves
-- it). Every writer is held to the rule, by the trigger below: the frontend through PostgREST,
-- the job API, `studio-worker enqueue` and the library (`Queue::enqueue` as studio_worker). A
-- typo in a trusted path (`enqueue --kind rendr`) is the commonest way a job waits forever.
--
-- SQLSTATE: an insert of an unknown kind raises `PT422` with the message
-- `unknown job kind "K"` and nothing else (no list of kinds: end users read it). The class `PT`
-- is not one PostgreSQL uses; PostgREST answers an SQLSTATE `PTxyz` with HTTP status xyz, so a
-- frontend's insert gets a 422. A kind that is not a valid name at all is left to the
-- `studio_jobs_kind_format` CHECK (23514), as before. Rust maps `PT422` in one place
-- (`control::kinds::UNKNOWN_KIND_SQLSTATE`).
--
-- Concurrency: the trigger reads `studio_kinds` in the inserting statement's snapshot. An insert
-- racing a `kinds forget` of its kind may still commit (it read the row before the forget
-- committed): forget does not delete jobs either, and such jobs show as unserved. Registration
-- is `insert … on conflict do nothing`, so replicas starting together never fail on each other.
--
-- Served: each replica keeps one row per kind it serves in `studio_kind_replicas`, written at
-- start, refreshed every `worker.rescue_interval` with `fresh_until` = now + 3 × that interval
-- (the replica states how long its row stays valid, so readers need no configuration of
-- their own), and deleted on graceful shutdown. A kind with due pending jobs and no fresh row
-- is *unserved* (`kinds`, the `studio_kind_unserved` gauge, a replica's warning). Rows of
-- replicas that died are deleted by the other replicas' refreshes once expired.
--
-- Role model:
--   anon, authenticated  nothing (RLS forced, no grants): which kinds exist and which replicas
--                        run is operators' business; the trigger reads as its owner.
--   studio_worker        studio_kinds: select, insert (declare, register), delete (forget);
--                        studio_kind_replicas: select, insert, update, delete.
--   service_role         all, as on the job tables.

create table public.studio_kinds (
  kind text primary key,
  known_since timestamptz not null default now(),
  -- who declared it (`kinds declare`); null when a replica registered it first
  declared_by text,
  -- the same names studio_jobs accepts (studio_jobs_kind_format)
  constraint studio_kinds_kind_format check (kind ~ '^[a-z][a-z0-9_.-]{0,63}$')
);
comment on table public.studio_kinds is
  'studio-worker: kinds jobs may be inserted for (`studio-worker kinds declare/forget`; replicas register theirs)';

create table public.studio_kind_replicas (
  kind text not null,
  worker text not null,
  last_seen timestamptz not null default now(),
  fresh_until timestamptz not null,
  primary key (kind, worker),
  constraint studio_kind_replicas_kind_format check (kind ~ '^[a-z][a-z0-9_.-]{0,63}$')
);
comment on table public.studio_kind_replicas is
  'studio-worker: which replica serves which kind, while fresh_until is in the future';

revoke all on table public.studio_kinds from public, anon, authenticated;
revoke all on table public.studio_kind_replicas from public, anon, authenticated;
grant select, insert, delete on table public.studio_kinds to studio_worker;
grant select, insert, update, delete on table public.studio_kind_replicas to studio_worker;
grant all on table public.studio_kinds to service_role;
grant all on table public.studio_kind_replicas to service_role;

alter table public.studio_kinds enable row level security;
alter table public.studio_kinds force row level security;
alter table public.studio_kind_replicas enable row level security;
alter table public.studio_kind_replicas force row level security;

create policy studio_kinds_worker_all on public.studio_kinds
  for all to studio_worker
  using (true) with check (true);
create policy studio_kinds_service_all on public.studio_kinds
  for all to service_role
  using (true) with check (true);
create policy studio_kind_replicas_worker_all on public.studio_kind_replicas
  for all to studio_worker
  using (true) with check (true);
create policy studio_kind_replicas_service_all on public.studio_kind_replicas
  for all to service_role
  using (true) with check (true);
-- FORCE applies policies to the owner too (the role running the migrations, which owns the
-- trigger function below and may run the operator commands), so the owner gets its own policy,
-- as in 0013.
do $owner$
begin
  execute format(
    'create policy studio_kinds_owner on public.studio_kinds to %I using (true) with check (true)',
    current_user);
  execute format(
    'create policy studio_kind_replicas_owner on public.studio_kind_replicas to %I using (true) with check (true)',
    current_user);
end
$owner$;

-- The rule. `security definer`: users cannot read studio_kinds, the function reads it as its
-- owner. Named `10_…` so that it runs before later BEFORE INSERT triggers (e.g. a quota's
-- `20_…`): a job of an unknown kind is refused before anything counts it.
create function public.studio_jobs_known_kind() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    -- A name studio_jobs cannot hold is the CHECK's to refuse (with its own message).
    if new.kind is null or new.kind !~ '^[a-z][a-z0-9_.-]{0,63}$' then
      return new;
    end if;
    if not exists (select 1 from public.studio_kinds k where k.kind = new.kind) then
      raise exception using
        errcode = 'PT422',
        message = format('unknown job kind "%s"', new.kind);
    end if;
    return new;
  end
  $$;
revoke all on function public.studio_jobs_known_kind() from public, anon, authenticated;

create trigger studio_jobs_10_known_kind
  before insert on public.studio_jobs
  for each row execute function public.studio_jobs_known_kind();

-- Every kind that already has jobs is known: existing jobs and their clients keep working.
insert into public.studio_kinds (kind)
select distinct kind from public.studio_jobs
 where kind ~ '^[a-z][a-z0-9_.-]{0,63}$'
on conflict do nothing;

select public.studio_mark_schema(17);
