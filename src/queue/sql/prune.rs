//! Retention: deleting finished jobs past an age, in batches (the worker's `retention` and
//! `prune`).

/// Delete up to `$2` jobs that finished more than `$1` seconds ago (never pending or running).
pub(crate) const PRUNE_BATCH: &str = "\
with doomed as (
  select id from public.studio_jobs
   where finished_at < now() - make_interval(secs => $1::float8)
     and status in ('succeeded', 'failed', 'cancelled')
   order by finished_at
   limit $2
   for update skip locked
)
delete from public.studio_jobs j where j.id = any(array(select id from doomed))";

/// How many jobs [`PRUNE_BATCH`] would delete, all batches together (`prune --dry-run`).
pub(crate) const PRUNABLE: &str = "\
select count(*) from public.studio_jobs
 where finished_at < now() - make_interval(secs => $1::float8)
   and status in ('succeeded', 'failed', 'cancelled')";
