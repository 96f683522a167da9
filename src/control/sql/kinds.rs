//! Statements of `control::kinds` (tables of migration 0017). A replica row is live while its
//! `fresh_until` is in the future, by the database's clock.

/// Declare `$1` (by `$2`); returns the kind when it was not known before.
pub(crate) const DECLARE: &str = "\
insert into public.studio_kinds (kind, declared_by) values ($1, $2)
on conflict (kind) do nothing
returning kind";

/// Forget `$1` unless a live replica serves it: returns the live replicas and whether the kind
/// was known (and is now forgotten, with its expired replica rows, when no replica is live).
pub(crate) const FORGET: &str = "\
with live as (
  select count(*) as n from public.studio_kind_replicas
   where kind = $1 and fresh_until > now()
),
gone as (
  delete from public.studio_kinds
   where kind = $1 and (select n from live) = 0
  returning kind
),
stale as (
  delete from public.studio_kind_replicas
   where kind = $1 and (select n from live) = 0
)
select (select n from live), exists (select 1 from gone)";

/// Register worker `$2` as serving the kinds `$1` until `$3` seconds from now: the kinds
/// become known (if they were not), the worker's rows are written or refreshed, and expired
/// rows of other replicas (which died without unregistering) are deleted, skipping rows another
/// refresh is deleting.
pub(crate) const REGISTER: &str = "\
with known as (
  insert into public.studio_kinds (kind)
  select unnest($1::text[])
  on conflict (kind) do nothing
),
expired as (
  delete from public.studio_kind_replicas r
   where (r.kind, r.worker) in (
     select kind, worker from public.studio_kind_replicas
      where fresh_until <= now() and worker <> $2
      for update skip locked)
)
insert into public.studio_kind_replicas (kind, worker, last_seen, fresh_until)
select k, $2, now(), now() + make_interval(secs => $3::float8)
  from unnest($1::text[]) as k
on conflict (kind, worker) do update
   set last_seen = excluded.last_seen, fresh_until = excluded.fresh_until";

/// Delete worker `$1`'s rows (graceful shutdown).
pub(crate) const UNREGISTER: &str = "\
delete from public.studio_kind_replicas where worker = $1";

/// Every known kind, by name.
pub(crate) const KNOWN: &str = "\
select kind from public.studio_kinds order by kind";

/// Every known kind and every kind with due pending jobs: known or not, live replicas, due
/// pending jobs, and whether it is unserved (due pending jobs, no live replica).
pub(crate) const SERVING: &str = "\
with due as (
  select kind, count(*) as due
    from public.studio_jobs
   where status = 'pending' and run_at <= now()
   group by kind
),
live as (
  select kind, count(*) as replicas
    from public.studio_kind_replicas
   where fresh_until > now()
   group by kind
),
names as (
  select kind from public.studio_kinds
  union select kind from due
)
select n.kind, k.kind is not null as known, coalesce(l.replicas, 0) as replicas,
       coalesce(d.due, 0) as due_pending,
       coalesce(d.due, 0) > 0 and coalesce(l.replicas, 0) = 0 as unserved
  from names n
  left join public.studio_kinds k on k.kind = n.kind
  left join live l on l.kind = n.kind
  left join due d on d.kind = n.kind
 order by n.kind";
