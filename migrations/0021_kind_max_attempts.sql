-- A kind's attempts for every writer (issue 18).
--
-- Rule: a job whose writer gives no `max_attempts` (a frontend insert through PostgREST that
-- leaves the column out, the job API, `studio-worker enqueue` without --config, the library, a
-- schedule without its own) gets its kind's `studio_kinds.max_attempts`, and 3 when the kind
-- has none. A writer that gives a value keeps it. Before this migration the column default (3)
-- applied to everyone but the worker's own enqueues, whatever the kind was configured with.
--
-- Where a kind's value comes from: each replica states `kinds.<k>.max_attempts` (null when
-- unset) for the kinds it serves when it registers and at every refresh (`control::kinds`,
-- `register_with_limits`); `studio-worker migrate` and `kinds declare` state the value of their
-- configuration's kinds. Replicas of one kind with different values (a rolling deploy) each
-- state theirs: the last one written holds until the old replicas are gone. Kinds known before
-- this migration have none (3, as before), until a replica registers them.
--
-- How: the column loses its default, so a writer that leaves it out inserts NULL, and a BEFORE
-- INSERT row trigger fills it in. Its `WHEN (new.max_attempts is null)` is evaluated without
-- calling the function, so a row whose writer gave a value costs nothing more (bulk enqueues,
-- `Queue::enqueue_many`, give each row its value in the statement itself: no PL/pgSQL per row).
-- The NOT NULL and CHECK constraints run after BEFORE triggers, so every row still ends up with
-- 1..1000 attempts. A job of an unknown kind gets 3 here and is then refused by the known-kind
-- check (0020) with PT422, as before. Named `05_…` so that it runs before the other BEFORE
-- INSERT row trigger (the quota's `20_…`), which then sees a complete row.
--
-- Role model: users cannot read studio_kinds; the function reads it as its owner (security
-- definer) and no client role may execute it directly. studio_worker gains UPDATE of this one
-- column (registration and declaration state it with `on conflict … do update`); 0017's policy
-- for it already covers every command. service_role has all privileges (0017).

alter table public.studio_kinds
  add column max_attempts integer
  constraint studio_kinds_max_attempts check (max_attempts between 1 and 1000);
comment on column public.studio_kinds.max_attempts is
  'studio-worker: attempts of a job of this kind whose writer gave none (null: 3)';
grant update (max_attempts) on table public.studio_kinds to studio_worker;

alter table public.studio_jobs alter column max_attempts drop default;

create function public.studio_jobs_kind_max_attempts() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    new.max_attempts := coalesce(
      (select k.max_attempts from public.studio_kinds k where k.kind = new.kind), 3);
    return new;
  end
  $$;
revoke all on function public.studio_jobs_kind_max_attempts() from public, anon, authenticated;

create trigger studio_jobs_05_kind_max_attempts
  before insert on public.studio_jobs
  for each row
  when (new.max_attempts is null)
  execute function public.studio_jobs_kind_max_attempts();
-- ALWAYS: the column has no default left, so the trigger is what keeps a row that leaves it out
-- insertable; it must fire under `session_replication_role = replica` too (bulk loads that skip
-- the history and quota triggers). Rows that carry a value, as replicated rows do, skip it by WHEN.
alter table public.studio_jobs enable always trigger studio_jobs_05_kind_max_attempts;

select public.studio_mark_schema(21);
