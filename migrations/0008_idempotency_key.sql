-- Idempotent creation (issue 12): a client-chosen key, unique per user, so that a create retried
-- after a timeout or a crash returns the job the first request made instead of making another.
--
-- The database enforces it, so it holds on every path: the job API, supabase-js inserting the
-- column through the Data API, `studio-worker enqueue --idempotency-key` and `Queue::enqueue`.
-- A second insert with the same (user_id, idempotency_key) waits for the first one's transaction
-- (unique index) and then fails with 23505, or does nothing under `on conflict do nothing`.

alter table public.studio_jobs add column idempotency_key text;

alter table public.studio_jobs add constraint studio_jobs_idempotency_key_format
  check (idempotency_key is null or length(idempotency_key) between 1 and 255);

comment on column public.studio_jobs.idempotency_key is
  'Client-chosen key, unique per user: a create repeated with the same key makes no second job.';

create unique index studio_jobs_user_idempotency_key_idx
  on public.studio_jobs (user_id, idempotency_key)
  where idempotency_key is not null;

grant insert (idempotency_key) on table public.studio_jobs to authenticated;

-- The job API takes `priority` and `run_at` from users (issue 12). A user may only defer or
-- lower their own jobs, never move them ahead of anyone: priority at most the default 0, and
-- run_at not before the statement's time (the default). A restrictive policy, so it narrows
-- 0004's insert policy without replacing it.
grant insert (priority, run_at) on table public.studio_jobs to authenticated;

create policy studio_jobs_owner_insert_limits on public.studio_jobs
  as restrictive
  for insert to authenticated
  with check (priority <= 0 and run_at >= now());
