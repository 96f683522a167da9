-- Paused kinds (issue 13): operators stop the claiming of a kind during an incident, and resume it.
--
-- Rule: a kind with a row here is not claimed. Every claim statement (FIFO, fair, and the named
-- fast path) leaves out the kinds listed here in its own SQL, so every replica honours a pause
-- at its next claim, with no restart and no state in memory. A pause does not stop running jobs,
-- and users may still insert jobs of a paused kind: they wait as `pending`.
-- Resume deletes the row; the trigger below then wakes idle workers on `studio_jobs` (the same
-- empty notification as 0012's "a job became claimable"), so waiting jobs start at once.
--
-- Role model:
--   anon, authenticated  nothing (RLS forced, no grants): which kinds are paused is operators'.
--   studio_worker        select (the claim reads it), insert and delete (`kinds pause/resume`).
--   service_role         all, as on the job tables.

create table public.studio_paused_kinds (
  kind text primary key,
  paused_at timestamptz not null default now(),
  paused_by text,
  -- the same names studio_jobs accepts (studio_jobs_kind_format)
  constraint studio_paused_kinds_kind_format check (kind ~ '^[a-z][a-z0-9_.-]{0,63}$')
);
comment on table public.studio_paused_kinds is
  'studio-worker: kinds no worker claims until resumed (`studio-worker kinds pause/resume`)';

revoke all on table public.studio_paused_kinds from public, anon, authenticated;
grant select, insert, delete on table public.studio_paused_kinds to studio_worker;
grant all on table public.studio_paused_kinds to service_role;

alter table public.studio_paused_kinds enable row level security;
alter table public.studio_paused_kinds force row level security;

create policy studio_paused_kinds_worker_all on public.studio_paused_kinds
  for all to studio_worker
  using (true) with check (true);
create policy studio_paused_kinds_service_all on public.studio_paused_kinds
  for all to service_role
  using (true) with check (true);
-- FORCE applies policies to the owner too (the role running the migrations, which may also run
-- the operator commands), so the owner gets its own policy, as in 0011.
do $owner$
begin
  execute format(
    'create policy studio_paused_kinds_owner on public.studio_paused_kinds to %I using (true) with check (true)',
    current_user);
end
$owner$;

-- Resume wakes idle workers at once (pending jobs of the kind may be due).
create function public.studio_paused_kinds_resumed() returns trigger
  language plpgsql
  set search_path = ''
  as $$
  begin
    if exists (select 1 from old_rows) then
      perform pg_notify('studio_jobs', '');
    end if;
    return null;
  end
  $$;
revoke all on function public.studio_paused_kinds_resumed() from public, anon, authenticated;

create trigger studio_paused_kinds_resumed
  after delete on public.studio_paused_kinds
  referencing old table as old_rows
  for each statement execute function public.studio_paused_kinds_resumed();

select public.studio_mark_schema(13);
