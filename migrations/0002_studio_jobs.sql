-- The job table: one row per job, owned by the user who asked for it.
--
-- Status values and what moves a job between them (enforced by 0003's trigger):
--   pending   -> running    a worker claims it (attempt + 1, lease taken)
--   pending   -> cancelled  the owner or an operator cancels it before it starts
--   running   -> succeeded  the handler returned a result
--   running   -> failed     permanent error, or a retryable one with no attempts left
--   running   -> pending    retryable error (run_at pushed back), expired lease, worker shutdown
--   running   -> cancelled  cancellation requested while it ran
--   succeeded | failed | cancelled -> pending   an operator's retry (users cannot do it)
--
-- Invariants kept by CHECK constraints so that no writer, however privileged, can store a row the
-- worker or the frontend would misread.

create table public.studio_jobs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  kind text not null,
  input jsonb not null default '{}'::jsonb,
  status text not null default 'pending',
  priority smallint not null default 0,
  run_at timestamptz not null default now(),
  attempt integer not null default 0,
  max_attempts integer not null default 3,
  progress smallint not null default 0,
  progress_message text,
  result jsonb,
  error text,
  locked_by text,
  lease_expires_at timestamptz,
  cancel_requested_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,

  constraint studio_jobs_status_known
    check (status in ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  constraint studio_jobs_kind_format
    check (kind ~ '^[a-z][a-z0-9_.-]{0,63}$'),
  -- 1 MiB as stored (after TOAST compression the check is on the stored size, which is what costs).
  constraint studio_jobs_input_size
    check (pg_column_size(input) <= 1048576),
  constraint studio_jobs_result_size
    check (result is null or pg_column_size(result) <= 1048576),
  constraint studio_jobs_priority_range
    check (priority between -100 and 100),
  constraint studio_jobs_attempts_range
    check (max_attempts between 1 and 1000 and attempt between 0 and max_attempts),
  constraint studio_jobs_progress_range
    check (progress between 0 and 100),
  constraint studio_jobs_message_sizes
    check (coalesce(length(error), 0) <= 8192 and coalesce(length(progress_message), 0) <= 1024),
  -- terminal <=> finished
  constraint studio_jobs_finished_iff_terminal
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null)),
  -- running <=> holds a lease
  constraint studio_jobs_lease_iff_running
    check ((status = 'running') = (locked_by is not null and lease_expires_at is not null)),
  -- only jobs that ran can have a start time; every running job has one
  constraint studio_jobs_started_when_run
    check (status <> 'running' or started_at is not null),
  constraint studio_jobs_succeeded_ran
    check (status <> 'succeeded' or (started_at is not null and attempt >= 1)),
  -- a pending job always has an attempt left, so a claim never overshoots max_attempts
  constraint studio_jobs_pending_has_attempt_left
    check (status <> 'pending' or attempt < max_attempts)
)
with (
  -- Hot queue table: leave room for HOT updates (progress, heartbeats) and vacuum early.
  fillfactor = 80,
  autovacuum_vacuum_scale_factor = 0.02,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_delay = 0
);

comment on table public.studio_jobs is
  'Jobs created by users (RLS: own rows only) and run by the studio-worker daemon.';
comment on column public.studio_jobs.priority is 'Higher runs first; -100..100, default 0.';
comment on column public.studio_jobs.error is
  'Why the last attempt did not succeed (error, cancellation or rescue reason).';

-- Claim path: pending rows in claim order. Status literal in the predicate so the planner can
-- match it against the claim query's literal.
create index studio_jobs_claim_idx
  on public.studio_jobs (priority desc, run_at, id)
  where status = 'pending';

-- Per-user claim path (fair scheduling looks for each user's next job).
create index studio_jobs_user_pending_idx
  on public.studio_jobs (user_id, priority desc, run_at, id)
  where status = 'pending';

-- Lease expiry (rescue) and per-worker views of running jobs.
create index studio_jobs_lease_idx
  on public.studio_jobs (lease_expires_at)
  where status = 'running';

-- Users' lists (and the RLS filter on user_id).
create index studio_jobs_user_created_idx
  on public.studio_jobs (user_id, created_at desc);

-- Retention: finished jobs by age.
create index studio_jobs_finished_idx
  on public.studio_jobs (finished_at)
  where finished_at is not null;
