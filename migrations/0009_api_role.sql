-- The job API's role (issue 12), on the model of Supabase's `authenticator`.
--
--   studio_api  NOLOGIN, NOINHERIT, member of `authenticated`. It holds no privilege of its own:
--               all it can do is `set role authenticated` inside a transaction that also sets the
--               verified JWT claims, so every request runs under the RLS policies of 0004 as the
--               user it acts for. Operators grant it to the login role the API connects as:
--                 create role studio_api_login login password '…' in role studio_api;
--
-- Jobs created by a trusted backend through a service token record the service's name in
-- `created_by_service`, visible to the user. Users never write the column: its default reads a
-- transaction-local setting that only the API sets (the Data API runs each request as one
-- statement and cannot set it).
--
-- Hosted Supabase: `postgres` is not a superuser but has CREATEROLE and is a member of
-- `authenticated`; nothing here needs more. Role creation tolerates a concurrent creator.

do $roles$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'studio_api') then
    begin
      create role studio_api nologin noinherit;
    exception when duplicate_object or unique_violation then
      null; -- created concurrently by another database's migration
    end;
  end if;

  if not exists (
    select 1 from pg_catalog.pg_auth_members m
     where m.roleid = 'authenticated'::regrole and m.member = 'studio_api'::regrole
  ) then
    begin
      grant authenticated to studio_api;
    exception
      when duplicate_object or unique_violation then
        null; -- granted concurrently
      when insufficient_privilege then
        raise exception 'studio_api: the migrating role may not grant membership in authenticated'
          using errcode = 'insufficient_privilege',
                hint = 'PostgreSQL 16+ needs ADMIN OPTION on authenticated: run `create role studio_api nologin noinherit; grant authenticated to studio_api;` once as a role that has it, then migrate again.';
    end;
  end if;
end
$roles$;

alter table public.studio_jobs add column created_by_service text
  default nullif(current_setting('studio.created_by_service', true), '');

alter table public.studio_jobs add constraint studio_jobs_created_by_service_format
  check (created_by_service is null or length(created_by_service) between 1 and 64);

comment on column public.studio_jobs.created_by_service is
  'Name of the service token that created the job on the user''s behalf (null: the user did).';

-- The API's /readyz (studio-worker api) checks the schema version like the worker's.
grant execute on function public.studio_schema_version() to studio_api;
