//! Statements of `control::why`: the facts the claim decides on, for one job, read at one
//! instant (`$2`: the caller's `now`, NULL for the database clock).

/// The job and what could hold it back: its kind paused (since, by), the kind's live replicas,
/// the kind's and the user's running jobs. Counts of running jobs are bounded by the running
/// set (`studio_jobs_lease_idx`).
pub(crate) const FACTS: &str = "\
with now as (select coalesce($2::timestamptz, now()) as ts),
j as (
  select id, user_id, kind, status, priority, run_at, attempt, error
    from public.studio_jobs where id = $1
)
select j.status, j.kind, j.user_id, j.priority, j.run_at, j.attempt, (j.error is not null),
       (select ts from now),
       p.paused_at, p.paused_by,
       (select count(*) from public.studio_kind_replicas r
         where r.kind = j.kind and r.fresh_until > (select ts from now)),
       (select count(*) from public.studio_jobs r where r.status = 'running' and r.kind = j.kind),
       (select count(*) from public.studio_jobs r
         where r.status = 'running' and r.user_id = j.user_id)
  from j left join public.studio_paused_kinds p on p.kind = j.kind";

/// Due pending jobs of kind `$3` that a FIFO claim takes before job `$1` (priority `$4`, due
/// `$5`), counted up to 100,000 along `studio_jobs_claim_idx`.
pub(crate) const AHEAD_FIFO: &str = "\
select count(*) from (
  select 1 from public.studio_jobs
   where status = 'pending' and run_at <= coalesce($2::timestamptz, now()) and kind = $3
     and (priority > $4 or (priority = $4 and (run_at, id) < ($5, $1)))
   limit 100000
) ahead";

/// For a fair claim: the user's own due jobs of kind `$3` ahead of job `$1` (`k`), and the jobs
/// of other users whose turns come first: up to `k` of each (round robin gives every user with
/// due work one job per turn; the turn the job itself is in is shared, so it is not counted).
/// `$6` is the job's user.
pub(crate) const AHEAD_FAIR: &str = "\
with now as (select coalesce($2::timestamptz, now()) as ts),
mine as (
  select count(*) as k from public.studio_jobs
   where status = 'pending' and user_id = $6 and kind = $3 and run_at <= (select ts from now)
     and (priority > $4 or (priority = $4 and (run_at, id) < ($5, $1)))
),
others as (
  select user_id, count(*) as n from public.studio_jobs
   where status = 'pending' and run_at <= (select ts from now) and kind = $3 and user_id <> $6
   group by user_id
)
select coalesce((select sum(least(n, (select k from mine))) from others), 0)::int8
       + (select k from mine)";

/// Recorded starts of kind `$1` within `$3` seconds either side of `$2` (the rate's windows).
pub(crate) const STARTS: &str = "\
select started_at, jobs::int8 from public.studio_kind_starts
 where kind = $1
   and started_at > coalesce($2::timestamptz, now()) - make_interval(secs => $3::float8)
   and started_at < coalesce($2::timestamptz, now()) + make_interval(secs => $3::float8)";
