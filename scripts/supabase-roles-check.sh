#!/usr/bin/env bash
# Migrations and the API's role as on hosted Supabase, where `postgres` is NOT a superuser
# (CREATEROLE, member of anon/authenticated/service_role) and `auth` belongs to GoTrue.
#
# Starts a throwaway PostgreSQL 15 cluster on port 55499 (root, PostgreSQL server binaries),
# lays out the roles the supabase/postgres image creates, runs `studio-worker migrate` as the
# non-superuser `postgres`, then checks that a login role in studio_api can act as a user
# (RLS, created_by_service) and nothing else. Usage: scripts/supabase-roles-check.sh [binary]
set -euo pipefail
BIN_SW="${1:-target/debug/studio-worker}"
BIN_SW="$(realpath "$BIN_SW")"
DIR="$(mktemp -d /tmp/studio-hosted.XXXXXX)"; chown postgres: "$DIR"
B="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
D="$DIR/data"
trap 'runuser -u postgres -- "$B/pg_ctl" -D "$D" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
cd "$DIR"
runuser -u postgres -- $B/initdb -D $D -A trust -U supabase_admin --no-sync >/dev/null
runuser -u postgres -- $B/pg_ctl -D $D -l $DIR/log -w start -o "-p 55499 -k $DIR -c listen_addresses=127.0.0.1" >/dev/null
P="psql -h 127.0.0.1 -p 55499 -qAtX"
# what the supabase/postgres image sets up before any project migration
$P -U supabase_admin -d postgres <<'SQL'
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create role supabase_auth_admin nologin createrole;
create role postgres login createrole createdb replication bypassrls;
grant create on database postgres to postgres;
grant anon, authenticated, service_role to postgres;
alter role authenticated inherit; alter role anon inherit; alter role service_role inherit;
create database app owner postgres;
\c app
create schema auth authorization supabase_auth_admin;
grant usage on schema auth to anon, authenticated, service_role, postgres;
create table auth.users (id uuid primary key, email varchar(255));
alter table auth.users owner to supabase_auth_admin;
grant select, references on auth.users to postgres;
create function auth.uid() returns uuid language sql stable as $f$
  select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $f$;
create function auth.role() returns text language sql stable as $f$ select 'x'::text $f$;
create function auth.jwt() returns jsonb language sql stable as $f$
  select nullif(current_setting('request.jwt.claims', true), '')::jsonb $f$;
alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;
set role postgres; create publication supabase_realtime; reset role;
SQL
echo "postgres is superuser: $($P -U postgres -d app -c "select rolsuper from pg_roles where rolname = current_user")"
DATABASE_URL=postgres://postgres@127.0.0.1:55499/app "$BIN_SW" migrate
$P -U postgres -d app -c "create role studio_api_login login password 'pw' in role studio_api;"
$P -U supabase_admin -d app -c "insert into auth.users (id) values ('11111111-1111-4111-8111-111111111111')"
# jobs of unknown kinds are refused (0017): declare the one inserted below, as postgres
DATABASE_URL=postgres://postgres@127.0.0.1:55499/app "$BIN_SW" kinds declare render
# the API's login role acts as the user and nothing else
$P -U studio_api_login -d app <<'SQL'
begin;
select set_config('role','authenticated',true), set_config('request.jwt.claims','{"sub":"11111111-1111-4111-8111-111111111111","role":"authenticated"}',true), set_config('studio.created_by_service','orchestrator',true);
insert into public.studio_jobs (kind, input, idempotency_key) values ('render','{}','k1') returning user_id, created_by_service;
commit;
SQL

if $P -U studio_api_login -d app -c "select count(*) from public.studio_jobs" 2>/dev/null; then
  echo "FAIL: studio_api reads jobs without becoming a user"; exit 1; fi

if $P -U studio_api_login -d app -c "set role service_role" 2>/dev/null; then
  echo "FAIL: studio_api can become service_role"; exit 1; fi

# KEDA's login role (0025) asks for the demand, and may do nothing else
$P -U postgres -d app -c "create role studio_keda_login login password 'pw' in role studio_autoscaler;"
DEMAND="$($P -U studio_keda_login -d app -c "select public.studio_autoscale_demand(array['render'], 1, interval '0')")"
[[ "$DEMAND" == 1 ]] || { echo "FAIL: the demand as the autoscaler is '$DEMAND', expected 1 (one pending render job)"; exit 1; }
if $P -U studio_keda_login -d app -c "select count(*) from public.studio_jobs" 2>/dev/null; then
  echo "FAIL: studio_autoscaler reads jobs"; exit 1; fi
echo "OK: migrated as a non-superuser postgres; studio_api acts only as authenticated; studio_autoscaler only counts demand"
