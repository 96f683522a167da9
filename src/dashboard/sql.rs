//! The dashboard's own statements. Every one reads a bounded range of an index: the pending and
//! running sets (partial indexes), a range of finished jobs by time, a user's jobs, or the
//! rollups (per minute, per user over the last hour); none counts the whole table. Sessions are
//! read by primary key. The jobs list is built in `jobs.rs` from the same rule;
//! `tests/dashboard/plans.rs` checks the plans over a million finished jobs.

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

/// Whether the per-user summary is older than 55 s (or was never computed).
pub(crate) const USER_HOUR_STALE: &str = "\
select coalesce(max(computed_at) <= now() - interval '55 seconds', true)
  from public.studio_user_hour";

/// Forget the last per-user summary (before [`USER_HOUR`] writes the next, in one transaction).
pub(crate) const USER_HOUR_CLEAR: &str = "delete from public.studio_user_hour";

/// The per-user summary of the hour before now: per user, the jobs that finished in it and
/// their wait from due to start, p50 and p95, in seconds (`studio_jobs_finished_idx`: the
/// hour's finished jobs, not the table; bounded on both sides so that a table without
/// statistics is read by the index too).
pub(crate) const USER_HOUR: &str = "\
insert into public.studio_user_hour (user_id, finished, wait_p50, wait_p95, computed_at)
select user_id, count(*)::int4,
       percentile_cont(0.5) within group (
         order by extract(epoch from started_at - run_at)) filter (where started_at >= run_at),
       percentile_cont(0.95) within group (
         order by extract(epoch from started_at - run_at)) filter (where started_at >= run_at),
       now()
  from public.studio_jobs
 where finished_at > now() - interval '1 hour' and finished_at <= now()
 group by user_id";

/// The fairness view, per user: pending and running now (the partial indexes of the live
/// queue), and over the hour of the per-user summary ([`USER_HOUR`], recomputed once a minute)
/// how many finished and their wait p50 and p95; plus the hour's total and when it was
/// computed. The 100 users with the most due work (ties: more pending, more running, more
/// finished, then by id); with fewer than 100 such users, those running, then the busiest of
/// the hour. Only candidates are joined: the first 100 users with pending jobs in that order,
/// every user with a running job (as many as the running jobs) and the 100 busiest of the hour;
/// whatever the backlog, the joins and the sort see a few hundred rows.
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
candidates as (
  (select user_id from pending order by due desc, pending desc, user_id limit 100)
  union (select user_id from running)
  union (select user_id from public.studio_user_hour order by finished desc limit 100)
),
hour as (
  select coalesce(sum(finished), 0)::int8 as total, max(computed_at) as computed_at
    from public.studio_user_hour
)
select c.user_id, coalesce(p.pending, 0), coalesce(p.due, 0), coalesce(r.running, 0),
       coalesce(f.finished, 0)::int8, f.wait_p50, f.wait_p95, h.total, h.computed_at
  from candidates c
  left join pending p on p.user_id = c.user_id
  left join running r on r.user_id = c.user_id
  left join public.studio_user_hour f on f.user_id = c.user_id
  cross join hour h
 order by coalesce(p.due, 0) desc, coalesce(p.pending, 0) desc, coalesce(r.running, 0) desc,
          coalesce(f.finished, 0) desc, c.user_id
 limit 100";

/// The last job of each schedule `$1`, by its fire's job id: (job id, status, error).
pub(crate) const SCHEDULE_JOBS: &str = "\
select id, status, error from public.studio_jobs where id = any($1::uuid[])";

/// Delete the sessions that expired.
pub(crate) const SESSIONS_PRUNE: &str =
    "delete from public.studio_dashboard_sessions where expires_at <= now()";

/// A session: (SHA-256 of its id, operator, token tag, lifetime in seconds).
pub(crate) const SESSION_CREATE: &str = "\
insert into public.studio_dashboard_sessions (id_sha256, operator, token_tag, expires_at)
values ($1, $2, $3, now() + make_interval(secs => $4))";

/// The unexpired session whose id hashes to `$1`: (operator, token tag).
pub(crate) const SESSION_GET: &str = "\
select operator, token_tag from public.studio_dashboard_sessions
 where id_sha256 = $1 and expires_at > now()";

/// Sign out: the session whose id hashes to `$1` goes.
pub(crate) const SESSION_DELETE: &str =
    "delete from public.studio_dashboard_sessions where id_sha256 = $1";

/// The newest history row: the live pages' sign that the queue changed (one step down the
/// primary key).
pub(crate) const LATEST_EVENT: &str = "select coalesce(max(id), 0) from public.studio_job_events";
