//! Statements of `control::schedule`.

/// Record fire time `$2` of schedule `$1` and create its job `$3` (owner `$4`, kind `$5`, input
/// `$6`, priority `$7`, attempts `$8`; NULL: the kind's, migration 0021), in one statement: the
/// job is inserted only if the fire
/// row was (`on conflict do nothing` returns no row to a replica that lost the race, which then
/// inserts no job). If the job is refused (unknown owner, a CHECK), the fire row goes with it.
/// Returns the job's id, or no row.
pub(crate) const FIRE: &str = "\
with fire as (
  insert into public.studio_schedule_fires (schedule, fire_time, job_id)
  values ($1, $2, $3)
  on conflict (schedule, fire_time) do nothing
  returning job_id
)
insert into public.studio_jobs (id, user_id, kind, input, priority, run_at, max_attempts)
select job_id, $4, $5, $6, $7, now(), $8 from fire
returning id";

/// The latest fire of each schedule named in `$1` that has one: one index probe per name.
pub(crate) const LAST_FIRES: &str = "\
select s.name, f.fire_time, f.job_id, f.created_at
  from unnest($1::text[]) as s(name)
  cross join lateral (
    select fire_time, job_id, created_at from public.studio_schedule_fires
     where schedule = s.name
     order by fire_time desc
     limit 1
  ) f";

/// Delete up to `$2` fire rows whose fire time is older than `$1` seconds, never a schedule's
/// latest (the one catch-up starts from and `schedules` shows). Returns the rows deleted. No
/// row locks (they would need UPDATE, which the worker's role has not): two replicas pruning at
/// once delete a row once, and the latest row is out of reach of both.
pub(crate) const PRUNE_FIRES: &str = "\
with doomed as (
  select f.schedule, f.fire_time from public.studio_schedule_fires f
   where f.fire_time < now() - make_interval(secs => $1::float8)
     and f.fire_time < (select max(l.fire_time) from public.studio_schedule_fires l
                         where l.schedule = f.schedule)
   order by f.fire_time
   limit $2
)
delete from public.studio_schedule_fires d
 using doomed
 where d.schedule = doomed.schedule and d.fire_time = doomed.fire_time";
