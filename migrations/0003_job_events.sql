-- Job history and the state machine, kept by the database itself.
--
-- Every status change of a studio_jobs row, whoever makes it (worker, operator, future tool), is
-- checked against the allowed transitions and recorded in studio_job_events in the same statement.
-- The triggers are statement-level with transition tables, so a batch claim or a batch completion
-- of N jobs costs one trigger call and one multi-row insert, not N.
--
-- The history and cleanup functions run with definer rights (users have no INSERT on the events
-- table) and an empty search_path. They must be owned by a role that bypasses RLS: the migrating
-- role (postgres on Supabase, a superuser on plain PostgreSQL).

create table public.studio_job_events (
  id bigint generated always as identity,
  job_id uuid not null,
  user_id uuid not null,
  from_status text not null,
  to_status text not null,
  attempt integer not null,
  worker text,
  message text,
  created_at timestamptz not null default now(),
  primary key (job_id, id)
);

comment on table public.studio_job_events is
  'One row per status transition of a studio_jobs row, written by trigger; append-only.';

-- The allowed transitions, in one place. Pure and immutable so it can also be tested directly.
create function public.studio_job_transition_allowed(
  from_status text, to_status text, from_attempt integer, to_attempt integer
) returns boolean
  language sql immutable parallel safe
  set search_path = ''
  as $$
    select case
      when from_status = 'pending' and to_status = 'running' then to_attempt = from_attempt + 1
      when from_status = 'pending' and to_status = 'cancelled' then true
      when from_status = 'running'
        and to_status in ('succeeded', 'failed', 'cancelled', 'pending') then true
      when from_status in ('succeeded', 'failed', 'cancelled') and to_status = 'pending' then true
      else false
    end
  $$;

-- id and user_id never change: history and RLS both key on them. Fires only when an UPDATE names
-- one of these columns, so the queue's own statements never pay for it.
create function public.studio_jobs_keep_identity() returns trigger
  language plpgsql
  set search_path = ''
  as $$
  begin
    if new.id is distinct from old.id or new.user_id is distinct from old.user_id then
      raise exception 'studio_jobs: id and user_id of job % cannot change', old.id
        using errcode = 'integrity_constraint_violation';
    end if;
    return new;
  end
  $$;

create trigger studio_jobs_keep_identity
  before update of id, user_id on public.studio_jobs
  for each row execute function public.studio_jobs_keep_identity();

-- New jobs start pending and with no attempt used; wake idle workers once per statement.
create function public.studio_jobs_after_insert() returns trigger
  language plpgsql
  set search_path = ''
  as $$
  declare
    bad uuid;
    kinds text;
  begin
    select n.id into bad from new_rows n where n.status <> 'pending' or n.attempt <> 0 limit 1;
    if found then
      raise exception 'studio_jobs: job % must be created as pending with attempt 0', bad
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    -- Payload: the kinds inserted, so workers can ignore kinds they do not run ('' = look anyway).
    select string_agg(distinct n.kind, ',') into kinds from new_rows n;
    perform pg_notify('studio_jobs', case when length(kinds) < 7000 then kinds else '' end);
    return null;
  end
  $$;

create trigger studio_jobs_after_insert
  after insert on public.studio_jobs
  referencing new table as new_rows
  for each statement execute function public.studio_jobs_after_insert();

-- Reject illegal transitions, record the legal ones, and send the wake-ups they imply: one pass
-- over the changed rows (a heartbeat or progress update, which changes no status, finds none).
create function public.studio_jobs_after_update() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    illegal boolean;
    wake boolean;
    cancels uuid[];
    bad record;
  begin
    with changes as materialized (
      select n.id, n.user_id, o.status as from_status, n.status as to_status,
             o.attempt as from_attempt, n.attempt as to_attempt,
             coalesce(n.locked_by, o.locked_by) as worker, n.error, n.run_at,
             o.cancel_requested_at is null and n.cancel_requested_at is not null
               and n.status = 'running' as cancel_requested
        from old_rows o join new_rows n on n.id = o.id
       where n.status <> o.status
          or (o.cancel_requested_at is null and n.cancel_requested_at is not null)
    ), recorded as (
      insert into public.studio_job_events
          (job_id, user_id, from_status, to_status, attempt, worker, message)
        select id, user_id, from_status, to_status, to_attempt, worker,
               case when to_status in ('failed', 'cancelled')
                      or (from_status = 'running' and to_status = 'pending')
                    then error end
          from changes
         where to_status <> from_status
    )
    select coalesce(bool_or(to_status <> from_status and not public.studio_job_transition_allowed(
                      from_status, to_status, from_attempt, to_attempt)), false),
           -- a job that became claimable now (operator retry, rescue, requeue)
           coalesce(bool_or(to_status = 'pending' and from_status <> 'pending' and run_at <= now()), false),
           array_agg(id) filter (where cancel_requested)
      into illegal, wake, cancels
      from changes;

    if illegal then
      select o.id, o.status as from_status, n.status as to_status into bad
        from old_rows o join new_rows n on n.id = o.id
       where n.status <> o.status
         and not public.studio_job_transition_allowed(o.status, n.status, o.attempt, n.attempt)
       limit 1;
      raise exception 'studio_jobs: illegal status transition % -> % for job %',
          bad.from_status, bad.to_status, bad.id
        using errcode = 'object_not_in_prerequisite_state',
              hint = 'Allowed: pending->running|cancelled, running->succeeded|failed|cancelled|pending, finished->pending (operator retry).';
    end if;
    if wake then
      perform pg_notify('studio_jobs', '');
    end if;
    -- Cancellation requested for a running job: tell the worker that runs it.
    if cancels is not null then
      perform pg_notify('studio_jobs_cancel', id::text) from unnest(cancels) as id;
    end if;
    return null;
  end
  $$;

create trigger studio_jobs_after_update
  after update on public.studio_jobs
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.studio_jobs_after_update();

-- History goes with its job (retention, or the user's account being deleted).
create function public.studio_jobs_after_delete() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    delete from public.studio_job_events e using old_rows o where e.job_id = o.id;
    return null;
  end
  $$;

create trigger studio_jobs_after_delete
  after delete on public.studio_jobs
  referencing old table as old_rows
  for each statement execute function public.studio_jobs_after_delete();

-- Trigger functions are not API: nobody calls them directly.
-- (Supabase's default privileges grant EXECUTE on new functions to the API roles explicitly.)
revoke all on function public.studio_jobs_keep_identity() from public, anon, authenticated;
revoke all on function public.studio_jobs_after_insert() from public, anon, authenticated;
revoke all on function public.studio_jobs_after_update() from public, anon, authenticated;
revoke all on function public.studio_jobs_after_delete() from public, anon, authenticated;
