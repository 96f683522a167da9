-- Run once by the postgres image's entrypoint, as the superuser, when the `db` volume is first
-- initialised (files in /docker-entrypoint-initdb.d run only on an empty data directory):
--
--   studio_worker        NOLOGIN. `studio-worker migrate` (migrations/0004) finds it and grants it
--                        exactly what the queue needs.
--   studio_worker_login  LOGIN, member of studio_worker: the role the worker connects as.
--
-- The password comes from the db container's WORKER_DB_PASSWORD through psql's \getenv
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
\echo 00-roles.sql: roles studio_worker (nologin) and studio_worker_login (member) are ready
