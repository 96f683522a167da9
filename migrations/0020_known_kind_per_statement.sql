-- Known kinds, checked once per statement (issue 13; replaces 0017's row trigger).
--
-- Rule: unchanged from 0017. An insert of a job whose kind is not in `public.studio_kinds` is
-- refused with SQLSTATE `PT422` and the message `unknown job kind "K"` (the first unknown kind
-- of the statement), for every writer.
--
-- Why per statement: 0017 called a security-definer PL/pgSQL function for every inserted row.
-- `explain analyze` of a 20,000-row `insert … select` as studio_worker showed it taking
-- 197–248 ms of 714–860 ms (≈ 28 % of a bulk enqueue, ≈ 11 µs a row). This trigger reads the
-- statement's new rows once (a transition table, which the statement's other AFTER trigger
-- already builds) and looks each distinct kind up once. A single-row insert costs about what it
-- did.
--
-- Order: the check now runs after the row is written and after the row-level checks: a kind
-- name the table cannot hold is still the format CHECK's (23514), an unknown owner is still the
-- foreign key's (23503), and a user's insert still passes the quota trigger (0016/0019) first;
-- the refusal rolls the whole statement back, so nothing of it remains. An insert that inserts
-- nothing (`on conflict do nothing` on a repeated idempotency key) is not checked: it creates
-- no job.
--
-- Concurrency: as in 0017 (the statement's snapshot; `kinds forget` racing an insert may let
-- the insert commit, and its jobs show as unserved).
--
-- Role model: unchanged; the function runs as its owner (users cannot read studio_kinds) and no
-- client role may execute it.

drop trigger studio_jobs_10_known_kind on public.studio_jobs;

create function public.studio_jobs_known_kinds() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    unknown text;
  begin
    select n.kind into unknown
      from (select distinct kind from new_rows) n
     where not exists (select 1 from public.studio_kinds k where k.kind = n.kind)
     order by n.kind
     limit 1;
    if unknown is not null then
      raise exception using
        errcode = 'PT422',
        message = format('unknown job kind "%s"', unknown);
    end if;
    return null;
  end
  $$;
revoke all on function public.studio_jobs_known_kinds() from public, anon, authenticated;

create trigger studio_jobs_10_known_kind
  after insert on public.studio_jobs
  referencing new table as new_rows
  for each statement execute function public.studio_jobs_known_kinds();

drop function public.studio_jobs_known_kind();

select public.studio_mark_schema(20);
