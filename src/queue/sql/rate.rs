//! Start rates (migration 0015): both run inside a capped claim's transaction, under the
//! capped-claim advisory lock, with the claim's `$now` (see `claim::rate`).

/// The claim's time, the database's wall clock, and the starts of the kinds `$1` (with periods
/// `$2`, seconds) within a period either side of the claim's time `coalesce($3, now())`: one
/// row, the starts as three arrays.
pub(crate) const RECENT_STARTS: &str = "\
with now as (select coalesce($3::timestamptz, now()) as ts),
recent as (
  select s.kind, s.started_at, s.jobs
    from unnest($1::text[], $2::float8[]) as k(kind, secs)
    join public.studio_kind_starts s
      on s.kind = k.kind
     and s.started_at > (select ts from now) - make_interval(secs => k.secs)
     and s.started_at < (select ts from now) + make_interval(secs => k.secs)
)
select (select ts from now), clock_timestamp(),
       coalesce(array_agg(kind), '{}'), coalesce(array_agg(started_at), '{}'),
       coalesce(array_agg(jobs), '{}')
  from recent";

/// Record `$2` starts of kind `$1` at the claim's time `coalesce($3, now())`, and prune the
/// kind's starts older than its period `$4` (seconds), but never younger than an hour, and a
/// minute more (claims that took the lock late may still read a little before their own
/// period). The hour keeps what a replica with a longer period still reads while replicas
/// change a kind's limit from `1000/h` to `10/s` (each prunes with its own period); a limit with
/// a longer period than an hour is pruned by its own replicas' claims.
pub(crate) const RECORD_STARTS: &str = "\
with pruned as (
  delete from public.studio_kind_starts
   where kind = $1
     and started_at < coalesce($3::timestamptz, now())
                      - make_interval(secs => greatest($4::float8, 3600)) - interval '1 minute'
)
insert into public.studio_kind_starts (kind, started_at, jobs)
values ($1, coalesce($3::timestamptz, now()), $2)";
