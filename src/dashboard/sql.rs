//! The dashboard's own statements. Every one reads a bounded range of an index: the pending and
//! running sets (partial indexes), a range of finished jobs by time, a user's jobs, or the
//! per-minute rollup; none counts the whole table. The jobs list is built in `jobs.rs` from
//! the same rule; `tests/dashboard/plans.rs` checks the plans over a million finished jobs.

/// Serialises rollup passes across replicas (whoever holds it recounts; the others skip).
pub(crate) const ROLLUP_LOCK: &str =
    "select pg_try_advisory_xact_lock(hashtext('studio_job_minutes'))";

/// Recount the jobs finished in `[$1, $2)` per minute and kind (`studio_jobs_finished_idx`).
pub(crate) const ROLLUP: &str = "\
with counted as (
  select date_trunc('minute', finished_at) as minute, kind,
         count(*) filter (where status = 'succeeded')::int4 as succeeded,
         count(*) filter (where status = 'failed')::int4 as failed,
         count(*) filter (where status = 'cancelled')::int4 as cancelled
    from public.studio_jobs
   where finished_at >= $1 and finished_at < $2
     and status in ('succeeded', 'failed', 'cancelled')
   group by 1, 2
)
insert into public.studio_job_minutes (minute, kind, succeeded, failed, cancelled)
select minute, kind, succeeded, failed, cancelled from counted
on conflict (minute, kind) do update
   set succeeded = excluded.succeeded, failed = excluded.failed, cancelled = excluded.cancelled";

/// Minutes older than eight days go.
pub(crate) const ROLLUP_PRUNE: &str =
    "delete from public.studio_job_minutes where minute < now() - interval '8 days'";

/// The latest minute recorded.
pub(crate) const ROLLUP_LATEST: &str = "select max(minute) from public.studio_job_minutes";

/// Finished per minute since `$1`: (minute, succeeded, failed + cancelled).
pub(crate) const CHART: &str = "\
select minute, sum(succeeded)::int8, sum(failed + cancelled)::int8
  from public.studio_job_minutes
 where minute >= $1
 group by minute
 order by minute";

/// Finished per kind since `$1`, and in the last hour: (kind, succeeded, failed, cancelled,
/// succeeded in the last hour, failed in the last hour).
pub(crate) const FINISHED_BY_KIND: &str = "\
select kind, sum(succeeded)::int8, sum(failed)::int8, sum(cancelled)::int8,
       coalesce(sum(succeeded) filter (where minute >= now() - interval '1 hour'), 0)::int8,
       coalesce(sum(failed) filter (where minute >= now() - interval '1 hour'), 0)::int8
  from public.studio_job_minutes
 where minute >= $1
 group by kind";

/// The live replicas: (worker, kinds served, last seen, running jobs).
pub(crate) const REPLICAS: &str = "\
with live as (
  select worker, array_agg(kind order by kind) as kinds, max(last_seen) as last_seen
    from public.studio_kind_replicas
   where fresh_until > now()
   group by worker
),
running as (
  select locked_by as worker, count(*) as running from public.studio_jobs
   where status = 'running'
   group by locked_by
)
select coalesce(l.worker, r.worker), coalesce(l.kinds, '{}'), l.last_seen, coalesce(r.running, 0)
  from live l full join running r on r.worker = l.worker
 order by 1";

/// The fairness view, per user (the 100 with the most due work): pending, running, and over
/// the last hour (the newest 10,000 jobs finished in it) how many finished and their wait from
/// due to start, p50 and p95, in seconds; plus the hour's total.
pub(crate) const USERS: &str = "\
with pending as (
  select user_id, count(*) as pending,
         count(*) filter (where run_at <= now()) as due
    from public.studio_jobs where status = 'pending' group by user_id
),
running as (
  select user_id, count(*) as running from public.studio_jobs
   where status = 'running' group by user_id
),
recent as (
  select user_id, started_at, run_at from public.studio_jobs
   where finished_at is not null and finished_at > now() - interval '1 hour'
   order by finished_at desc
   limit 10000
),
finished as (
  select user_id, count(*) as finished,
         percentile_cont(0.5) within group (
           order by extract(epoch from started_at - run_at)) filter (where started_at >= run_at) as p50,
         percentile_cont(0.95) within group (
           order by extract(epoch from started_at - run_at)) filter (where started_at >= run_at) as p95
    from recent group by user_id
)
select u.user_id, coalesce(p.pending, 0), coalesce(p.due, 0), coalesce(r.running, 0),
       coalesce(f.finished, 0), f.p50::float8, f.p95::float8,
       (select count(*) from recent)
  from (select user_id from pending union select user_id from running
        union select user_id from finished) u
  left join pending p on p.user_id = u.user_id
  left join running r on r.user_id = u.user_id
  left join finished f on f.user_id = u.user_id
 order by coalesce(p.due, 0) desc, coalesce(r.running, 0) desc, coalesce(f.finished, 0) desc
 limit 100";

/// The last job of each schedule `$1`, by its fire's job id: (job id, status, error).
pub(crate) const SCHEDULE_JOBS: &str = "\
select id, status, error from public.studio_jobs where id = any($1::uuid[])";

/// The newest history row: the live pages' sign that the queue changed (one step down the
/// primary key).
pub const LATEST_EVENT: &str = "select coalesce(max(id), 0) from public.studio_job_events";
