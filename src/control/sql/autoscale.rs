//! Statements of `control::autoscale` (migration 0025).

/// Replicas needed for the runnable work of kinds `$1` (NULL: all), `$2` jobs each, counting
/// work due within `$3` seconds: the function KEDA's trigger calls.
pub(crate) const DEMAND: &str = "\
select public.studio_autoscale_demand($1::text[], $2::int4, make_interval(secs => $3::float8))";

/// Publish the limits of the kinds `$1` (`max_running` `$2`, rate `$3` starts per `$4` seconds,
/// NULL for none) with the per-user cap `$5` (NULL: none), by `$6`. Every configured kind gets
/// a row, so a limit removed from the configuration is removed here too.
pub(crate) const PUBLISH_LIMITS: &str = "\
insert into public.studio_kind_limits as l
       (kind, max_running, rate_count, rate_period, max_running_per_user, published_at, published_by)
select t.kind, t.max_running, t.rate_count, make_interval(secs => t.rate_secs), $5, now(), $6
  from unnest($1::text[], $2::int4[], $3::int4[], $4::float8[])
       as t(kind, max_running, rate_count, rate_secs)
on conflict (kind) do update
   set max_running = excluded.max_running, rate_count = excluded.rate_count,
       rate_period = excluded.rate_period, max_running_per_user = excluded.max_running_per_user,
       published_at = excluded.published_at, published_by = excluded.published_by";

/// Publish the next fire time of the schedules `$1` (kind `$2`, owner `$3`, at `$4`), each row
/// fresh for `$5` seconds.
pub(crate) const PUBLISH_NEXT_FIRES: &str = "\
insert into public.studio_schedule_next_fires as f
       (schedule, kind, user_id, next_fire_at, fresh_until)
select t.schedule, t.kind, t.user_id, t.next_fire_at, now() + make_interval(secs => $5::float8)
  from unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[])
       as t(schedule, kind, user_id, next_fire_at)
on conflict (schedule) do update
   set kind = excluded.kind, user_id = excluded.user_id, next_fire_at = excluded.next_fire_at,
       fresh_until = excluded.fresh_until";
