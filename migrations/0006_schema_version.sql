-- The schema version, readable by the worker's role without any grant on sqlx's bookkeeping table
-- (the worker's /readyz checks that the database is at least at the version it was built for).
-- The table's location is resolved now, while the migration runs; the function keeps an empty
-- search_path.

do $version$
declare
  migrations text;
begin
  select format('%I.%I', n.nspname, c.relname) into migrations
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = to_regclass('_sqlx_migrations');
  if migrations is null then
    -- Applied by hand (psql) rather than by sqlx: there is no version to report.
    create function public.studio_schema_version() returns bigint
      language sql stable security definer set search_path = ''
      as $f$ select null::bigint $f$;
  else
    execute format(
      'create function public.studio_schema_version() returns bigint
         language sql stable security definer set search_path = %L
         as $f$ select max(version) from %s where success $f$',
      '', migrations);
  end if;
end
$version$;

revoke all on function public.studio_schema_version() from public, anon, authenticated;
grant execute on function public.studio_schema_version() to studio_worker, service_role;
