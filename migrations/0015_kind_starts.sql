-- Start rates per kind (issue 13): `kinds.<k>.rate_limit = "10/s"` allows at most 10 starts of
-- the kind in any window of one second, across every replica.
--
-- Rule: a claim of a rate-limited kind reads this kind's recent starts, takes at most what the
-- limit leaves in every window that contains the claim's own time, and records its starts here
-- (one row per claim: kind, the claim's `now()`, how many jobs). The time recorded is the claim
-- transaction's `now()`, the same value the history trigger writes into
-- studio_job_events.created_at for those `pending -> running` rows, so the log and the history
-- count the same starts at the same instants. Rows older than the period (plus a minute) are
-- pruned by the claims themselves. Nothing is raised: a claim takes fewer jobs, and the rest
-- stay `pending` without a write.
--
-- Concurrency: claims that read or write this table hold the capped-claim advisory lock
-- (`pg_advisory_xact_lock(hashtext('studio_jobs.capped_claim'))`, the lock of the running-job
-- caps), so they run one at a time and each reads every earlier claim's rows. Lock order can
-- differ from transaction start order, so a claim can find rows later than its own `now()`:
-- it then counts every window containing its time, those ending after it too, and stays exact.
--
-- Role model:
--   anon, authenticated  nothing (RLS forced, no grants): rates are operators' business.
--   studio_worker        select, insert, delete (the claim reads, records and prunes).
--   service_role         all, as on the job tables.

create table public.studio_kind_starts (
  -- a key of its own, so that the claims' deletes replicate under any publication
  id bigint generated always as identity primary key,
  kind text not null,
  started_at timestamptz not null,
  jobs integer not null,
  constraint studio_kind_starts_kind_format check (kind ~ '^[a-z][a-z0-9_.-]{0,63}$'),
  constraint studio_kind_starts_jobs_positive check (jobs > 0)
);
comment on table public.studio_kind_starts is
  'studio-worker: recent starts of rate-limited kinds (kinds.<k>.rate_limit), one row per claim';

create index studio_kind_starts_kind_time_idx
  on public.studio_kind_starts (kind, started_at);

revoke all on table public.studio_kind_starts from public, anon, authenticated;
-- Supabase's default privileges grant new sequences to anon and authenticated (see 0004)
revoke all on sequence public.studio_kind_starts_id_seq from public, anon, authenticated;
grant select, insert, delete on table public.studio_kind_starts to studio_worker;
grant all on table public.studio_kind_starts to service_role;
grant all on sequence public.studio_kind_starts_id_seq to service_role;

alter table public.studio_kind_starts enable row level security;
alter table public.studio_kind_starts force row level security;

create policy studio_kind_starts_worker_all on public.studio_kind_starts
  for all to studio_worker
  using (true) with check (true);
create policy studio_kind_starts_service_all on public.studio_kind_starts
  for all to service_role
  using (true) with check (true);
-- FORCE applies policies to the owner too (the role running the migrations, which may also run
-- the operator commands), so the owner gets its own policy, as in 0013.
do $owner$
begin
  execute format(
    'create policy studio_kind_starts_owner on public.studio_kind_starts to %I using (true) with check (true)',
    current_user);
end
$owner$;

select public.studio_mark_schema(15);
