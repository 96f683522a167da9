-- Let frontends watch their jobs live through Supabase Realtime (postgres_changes). Realtime applies
-- the same RLS SELECT policy per subscriber, so users only receive changes to their own jobs.
-- Guarded: the publication may be missing, may publish all tables, or may already hold the table.

do $realtime$
begin
  if exists (
       select 1 from pg_catalog.pg_publication
        where pubname = 'supabase_realtime' and not puballtables)
     and not exists (
       select 1 from pg_catalog.pg_publication_tables
        where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'studio_jobs')
  then
    alter publication supabase_realtime add table public.studio_jobs;
  end if;
end
$realtime$;
