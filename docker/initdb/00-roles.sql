-- Run once by the postgres image's entrypoint, as the superuser, when the `db` volume is first
-- initialised (files in /docker-entrypoint-initdb.d run only on an empty data directory):
--
--   studio_worker        NOLOGIN. `studio-worker migrate` (migrations/0004) finds it and grants it
--                        exactly what the queue needs.
--   studio_worker_login  LOGIN, member of studio_worker: the role the worker connects as.
--   studio_api           NOLOGIN, NOINHERIT. `studio-worker migrate` (migrations/0009) makes it
--                        a member of authenticated, which it may only SET ROLE to.
--   studio_api_login     LOGIN, member of studio_api: the role the job API connects as.
--
-- The passwords come from the db container's WORKER_DB_PASSWORD and API_DB_PASSWORD through psql's \getenv
-- (psql 15+), so it never appears on a command line, and format(%L) quotes it as a literal. It is
-- never echoed, and the statement carrying it is kept out of the server log even on error.
-- Safe to run again by hand (psql -f): it then resets the password and membership.

\set ON_ERROR_STOP on
\set QUIET on
set log_statement = 'none';
set log_min_error_statement = 'panic';

\getenv worker_password WORKER_DB_PASSWORD
\if :{?worker_password}
\else
  \set worker_password ''
\endif
select :'worker_password' = '' as worker_password_missing \gset
\if :worker_password_missing
  do $missing$ begin
    raise exception 'WORKER_DB_PASSWORD is not set in the db service (see .env.example)';
  end $missing$;
\endif

select 'create role studio_worker nologin'
 where not exists (select from pg_catalog.pg_roles where rolname = 'studio_worker')
\gexec

select case
         when exists (select from pg_catalog.pg_roles where rolname = 'studio_worker_login')
           then format('alter role studio_worker_login login password %L', :'worker_password')
         else format('create role studio_worker_login login password %L in role studio_worker',
                     :'worker_password')
       end
\gexec

select 'grant studio_worker to studio_worker_login'
 where not pg_catalog.pg_has_role('studio_worker_login', 'studio_worker', 'member')
\gexec

\unset worker_password

\getenv api_password API_DB_PASSWORD
\if :{?api_password}
\else
  \set api_password ''
\endif
select :'api_password' = '' as api_password_missing \gset
\if :api_password_missing
  do $missing$ begin
    raise exception 'API_DB_PASSWORD is not set in the db service (see .env.example)';
  end $missing$;
\endif

select 'create role studio_api nologin noinherit'
 where not exists (select from pg_catalog.pg_roles where rolname = 'studio_api')
\gexec

select case
         when exists (select from pg_catalog.pg_roles where rolname = 'studio_api_login')
           then format('alter role studio_api_login login password %L', :'api_password')
         else format('create role studio_api_login login password %L in role studio_api',
                     :'api_password')
       end
\gexec

select 'grant studio_api to studio_api_login'
 where not pg_catalog.pg_has_role('studio_api_login', 'studio_api', 'member')
\gexec

\unset api_password
\echo 00-roles.sql: roles studio_worker, studio_api (nologin) and their login roles are ready
