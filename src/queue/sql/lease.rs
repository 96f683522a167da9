//! Leases: the heartbeat that extends a worker's, and the rescue of expired ones (any replica).

/// Extend the leases of this worker's running jobs; returns the jobs still held, with whether a
/// cancellation was requested. Jobs missing from the result were lost. Fenced like a
/// transition, by id, attempt and owner (see `transition`'s note on why not by status).
pub(crate) const HEARTBEAT: &str = "\
update public.studio_jobs j
   set lease_expires_at = coalesce($4::timestamptz, now()) + make_interval(secs => $3::float8)
  from unnest($1::uuid[], $2::int4[]) as l(id, attempt)
 where j.id = l.id and j.attempt = l.attempt and j.locked_by = $5
returning j.id, (j.cancel_requested_at is not null) as cancel_requested";

/// How a renewal's transaction begins: its statements may run for `within` (at least 1 ms; 0
/// would mean no limit), then the server cancels them and releases their row locks.
pub(crate) fn renewal_begin(within: std::time::Duration) -> String {
    let ms = within.as_millis().clamp(1, i32::MAX as u128);
    format!("begin; set local statement_timeout = {ms}")
}

/// Return running jobs whose lease expired to pending (or failed when no attempt is left, or
/// cancelled when cancellation was requested). SKIP LOCKED and the re-check in the UPDATE make
/// concurrent rescuers in every replica safe: each expired job is rescued exactly once.
pub(crate) const RESCUE_EXPIRED: &str = "\
with now as (select coalesce($2::timestamptz, now()) as ts),
expired as (
  select id, locked_by from public.studio_jobs
   where status = 'running' and lease_expires_at < (select ts from now)
   order by lease_expires_at
   limit $1
   for update skip locked
),
decision as (
  select j.id, e.locked_by, case
           when j.cancel_requested_at is not null then 'cancelled'
           when j.attempt < j.max_attempts then 'pending'
           else 'failed'
         end as next_status
    from public.studio_jobs j join expired e on e.id = j.id
),
detail as (
  insert into public.studio_job_failures (job_id, attempt, detail, created_at)
  select d.id, j.attempt, 'lease expired: worker ' || d.locked_by || ' stopped renewing it',
         (select ts from now)
    from decision d join public.studio_jobs j on j.id = d.id
  on conflict (job_id, attempt) do update set detail = excluded.detail, created_at = excluded.created_at
)
update public.studio_jobs j
   set status = d.next_status,
       finished_at = case when d.next_status = 'pending' then null else (select ts from now) end,
       -- Back to pending it looks like any pending job (the history records the rescue); a
       -- job that ends here says why. Users read `error`: no worker host in it.
       error = case when d.next_status = 'pending' then null
                    else 'lease expired: the worker stopped renewing it' end,
       progress = case when d.next_status = 'pending' then 0 else j.progress end,
       progress_message = case when d.next_status = 'pending' then null else j.progress_message end,
       updated_at = (select ts from now), locked_by = null, lease_expires_at = null
  from decision d
 where j.id = d.id and j.locked_by is not null -- still running (0002's CHECK), by key
returning j.id, j.kind, j.status, d.locked_by as previous_worker";
