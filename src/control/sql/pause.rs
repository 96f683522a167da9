//! Statements of `control::pause` (migration 0013). The claims leave paused kinds out
//! themselves (`queue::sql`'s `unpaused_kinds!`); these are the operator's statements.

/// Pause kind `$1` (by `$2`, free text); returns nothing when it was already paused.
pub(crate) const PAUSE_KIND: &str = "\
insert into public.studio_paused_kinds (kind, paused_by) values ($1, $2)
on conflict (kind) do nothing
returning kind";

/// Resume kind `$1`; returns nothing when it was not paused. The table's delete trigger wakes
/// idle workers (`pg_notify('studio_jobs', '')`).
pub(crate) const RESUME_KIND: &str = "\
delete from public.studio_paused_kinds where kind = $1 returning kind";

/// Every kind that has pending or running jobs, is paused, or is among `$1` (the configured
/// kinds): whether it is paused (when, by whom), pending and running jobs.
pub(crate) const KIND_STATES: &str = "\
with depth as (
  select kind, count(*) filter (where status = 'pending') as pending,
         count(*) filter (where status = 'running') as running
    from public.studio_jobs
   -- `finished_at is null` is the same rows (a CHECK ties it to the status): it lets the scan
   -- use 0022's index of unfinished jobs with or without statistics
   where status in ('pending', 'running') and finished_at is null
   group by kind
),
names as (
  select kind from depth
  union select kind from public.studio_paused_kinds
  union select unnest($1::text[])
)
select n.kind, p.kind is not null as paused, p.paused_at, p.paused_by,
       coalesce(d.pending, 0) as pending, coalesce(d.running, 0) as running
  from names n
  left join depth d on d.kind = n.kind
  left join public.studio_paused_kinds p on p.kind = n.kind
 order by n.kind";
