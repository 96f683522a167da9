//! What operators read: job lists, counts by kind and status, the oldest due job, running
//! jobs per worker, and the `/metrics` gauges.

/// Operator: jobs matching optional filters, newest first.
pub(crate) const LIST_JOBS: &str = concat!(
    "select ",
    job_columns!(),
    " from public.studio_jobs
 where ($1::text is null or status = $1)
   and ($2::text is null or kind = $2)
   and ($3::uuid is null or user_id = $3)
 order by created_at desc, id desc
 limit $4"
);

/// Counts by kind and status.
pub(crate) const COUNT_BY_KIND_STATUS: &str = "\
select kind, status, count(*) from public.studio_jobs group by kind, status order by kind, status";

/// Age in seconds of the oldest due pending job, by kind.
pub(crate) const OLDEST_PENDING: &str = "\
select kind, extract(epoch from now() - min(run_at))::float8 as age_seconds
  from public.studio_jobs
 where status = 'pending' and run_at <= now()
 group by kind order by kind";

/// For the `/metrics` gauges, by kind: pending jobs, running jobs, seconds since the oldest
/// due pending job became due (0 when none is due), and whether the kind is paused (paused kinds
/// appear even without jobs).
pub(crate) const QUEUE_GAUGES: &str = "\
with depth as (
  select kind,
         count(*) filter (where status = 'pending') as pending,
         count(*) filter (where status = 'running') as running,
         coalesce(extract(epoch from now() - min(run_at) filter (
           where status = 'pending' and run_at <= now()))::float8, 0) as oldest,
         count(*) filter (where status = 'pending' and run_at <= now()) as due
    from public.studio_jobs
   -- `finished_at is null` is the same rows (a CHECK ties it to the status): it lets the scan
   -- use 0022's index of unfinished jobs with or without statistics
   where status in ('pending', 'running') and finished_at is null
   group by kind
)
select coalesce(d.kind, p.kind), coalesce(d.pending, 0), coalesce(d.running, 0),
       coalesce(d.oldest, 0), p.kind is not null, coalesce(d.due, 0)
  from depth d full join public.studio_paused_kinds p on p.kind = d.kind";

/// Running jobs per worker, with the oldest start.
pub(crate) const RUNNING_BY_WORKER: &str = "\
select locked_by as worker, count(*) as running, min(started_at) as oldest_started_at
  from public.studio_jobs
 where status = 'running'
 group by locked_by order by locked_by";
