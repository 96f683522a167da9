-- Supabase compatibility shim.
--
-- On hosted or self-hosted Supabase every object below already exists and this migration changes
-- nothing. On plain PostgreSQL it creates the minimum the later migrations and the RLS tests rely on:
-- the API roles, the `auth` schema with `auth.users`, the JWT helper functions with the same bodies
-- GoTrue installs (they read `request.jwt.claims` and the legacy `request.jwt.claim.*` settings), and
-- an empty `supabase_realtime` publication.
--
-- Rules (see docs/decisions.md):
-- * every object is checked before it is created; nothing in `auth` is ever replaced;
-- * Supabase's roles are never altered (ALTER ROLE ... NO* fails on hosted Supabase);
-- * roles are cluster-wide while databases are not, so role creation tolerates a concurrent creator
--   (parallel test databases, several deployments sharing one cluster).

do $shim$
declare
  api_role text;
begin
  foreach api_role in array array['anon', 'authenticated'] loop
    if not exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
      begin
        execute format('create role %I nologin', api_role);
      exception when duplicate_object or unique_violation then
        null; -- created concurrently by another database's migration
      end;
    end if;
  end loop;

  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    begin
      create role service_role nologin bypassrls;
    exception
      when duplicate_object or unique_violation then
        null;
      when insufficient_privilege then
        -- Only superusers may grant BYPASSRLS on PostgreSQL 15; 0004 gives service_role an
        -- explicit allow-all policy so it keeps full access either way.
        begin
          create role service_role nologin;
        exception when duplicate_object or unique_violation then
          null;
        end;
    end;
  end if;
end
$shim$;

do $shim$
begin
  if to_regnamespace('auth') is null then
    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;
  end if;

  if to_regclass('auth.users') is null then
    create table auth.users (
      id uuid primary key,
      email varchar(255) unique,
      raw_app_meta_data jsonb,
      raw_user_meta_data jsonb,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
  end if;

  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $f$;
  end if;

  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claim.role', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
      $f$;
  end if;

  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claim', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
      $f$;
  end if;

  if not exists (select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$shim$;
