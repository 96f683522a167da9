-- The schema records its own version, whichever tool applied the migrations; and the job
-- history joins the Realtime publication.
--
-- Schema version. `public.studio_schema_version()` read sqlx's `_sqlx_migrations`, which only
-- `studio-worker migrate` / `sqlx migrate run` write. The Supabase CLI (`supabase db push`,
-- `supabase start`) and psql do not, so a schema they applied had no version and the worker
-- refused to start. From here on the version lives in the schema itself:
--
--   CONVENTION for every later migration (0012 on): its last statement is
--
--       select public.studio_mark_schema(<its number>);
--
--   e.g. `select public.studio_mark_schema(12);` at the end of 0012_….sql. A test
--   (tests/integration/schema_version.rs) fails for a migration without it. Migrations numbered
--   below 0011 need no line: they run before this one, which records 11.
--
-- `studio_mark_schema` only ever raises the version (greatest), so the order in which files are
-- applied and re-running a file cannot lower it. The table is not for the Data API: RLS forced,
-- one policy for its owner, no grants to anon / authenticated.

create table if not exists public.studio_schema (
  singleton boolean primary key default true check (singleton),
  version bigint not null,
  updated_at timestamptz not null default now()
);
alter table public.studio_schema enable row level security;
alter table public.studio_schema force row level security;
revoke all on table public.studio_schema from public, anon, authenticated;
-- FORCE (like every studio table) applies policies to the owner too, so the owner — the role
-- running the migrations, which also owns the two functions below — gets the only policy.
do $owner$
begin
  if not exists (select 1 from pg_catalog.pg_policies
                  where schemaname = 'public' and tablename = 'studio_schema'
                    and policyname = 'studio_schema_owner') then
    execute format(
      'create policy studio_schema_owner on public.studio_schema to %I using (true) with check (true)',
      current_user);
  end if;
end
$owner$;
comment on table public.studio_schema is
  'studio-worker: the schema version, raised by each migration with public.studio_mark_schema(n)';

create or replace function public.studio_mark_schema(bigint) returns bigint
  language sql volatile set search_path = ''
  as $f$
    insert into public.studio_schema as s (singleton, version) values (true, $1)
    on conflict (singleton) do update
      set version = greatest(s.version, excluded.version), updated_at = now()
    returning s.version
  $f$;
revoke all on function public.studio_mark_schema(bigint) from public, anon, authenticated;

-- Same name, signature, owner and grants as 0006's (create or replace keeps them); now reads the
-- schema's own record.
create or replace function public.studio_schema_version() returns bigint
  language sql stable security definer set search_path = ''
  as $f$ select version from public.studio_schema $f$;

-- Realtime: a frontend can watch a job's history live (Realtime applies the events' RLS SELECT
-- policy per subscriber). Guarded like 0005: the publication may be missing (plain PostgreSQL
-- without the shim's), publish all tables, already hold the table, or belong to a role this
-- migration's role cannot alter.
do $realtime$
begin
  if exists (
       select 1 from pg_catalog.pg_publication
        where pubname = 'supabase_realtime' and not puballtables)
     and not exists (
       select 1 from pg_catalog.pg_publication_tables
        where pubname = 'supabase_realtime' and schemaname = 'public'
          and tablename = 'studio_job_events')
  then
    begin
      alter publication supabase_realtime add table public.studio_job_events;
    exception when insufficient_privilege then
      raise warning 'public.studio_job_events was not added to supabase_realtime (this role does not own the publication); add it as its owner to watch job history live';
    end;
  end if;
end
$realtime$;

select public.studio_mark_schema(11);
