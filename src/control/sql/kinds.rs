//! Statements of `control::kinds` (tables of migration 0017). A replica row is live while its
//! `fresh_until` is in the future, by the database's clock.

/// Declare `$1` (by `$2`) with attempts `$3` (migration 0021; NULL: leave a known kind's as
/// they are); returns whether it was not known before (no row: known, nothing changed).
pub(crate) const DECLARE: &str = "\
insert into public.studio_kinds as k (kind, declared_by, max_attempts) values ($1, $2, $3)
on conflict (kind) do update set max_attempts = excluded.max_attempts
 where $3 is not null and k.max_attempts is distinct from excluded.max_attempts
returning xmax = 0";

/// Make the statements of this transaction see what committed before each of them (a fresh
/// snapshot per statement), whatever `default_transaction_isolation` says: [`FORGET_LIVE`] must
/// see a registration that committed while it waited for [`LOCK_KIND`].
pub(crate) const READ_COMMITTED: &str = "set transaction isolation level read committed";

/// Serialise `forget` and registrations of kind `$1` (until the transaction ends): a forget that
/// counts no live replica cannot be overtaken by a registration that found the kind still
/// known, and a registration that follows a forget finds the kind gone and makes it known again.
/// The two-int form, keyed `hashtext('studio_kinds')`, so other advisory locks on kinds do not
/// collide with these.
pub(crate) const LOCK_KIND: &str = "\
select pg_advisory_xact_lock(hashtext('studio_kinds'), hashtext($1))";

/// [`LOCK_KIND`] for each of the kinds `$1`, in the order of their keys (two registrations of
/// overlapping kinds take them in the same order, so they never deadlock; kinds whose names hash
/// alike share a lock).
pub(crate) const LOCK_KINDS: &str = "\
select count(pg_advisory_xact_lock(hashtext('studio_kinds'), h))
  from (select distinct hashtext(k) as h from unnest($1::text[]) as k order by h) as keys";

/// Live replicas of `$1`. Run after [`LOCK_KIND`], in its own statement: under READ COMMITTED it
/// sees every registration that committed before the lock was granted. `now()` is the start of
/// the transaction, before the wait, so a row that lapsed while it waited still counts: forget
/// errs on the side of refusing.
pub(crate) const FORGET_LIVE: &str = "\
select count(*) from public.studio_kind_replicas where kind = $1 and fresh_until > now()";

/// Forget `$1` and its (expired) replica rows; returns whether it was known. Run only when
/// [`FORGET_LIVE`] counted none, under [`LOCK_KIND`]: no registration can write a row meanwhile.
pub(crate) const FORGET: &str = "\
with gone as (
  delete from public.studio_kinds where kind = $1
  returning kind
),
stale as (
  delete from public.studio_kind_replicas where kind = $1
)
select exists (select 1 from gone)";

/// Register worker `$2` as serving the kinds `$1` until `$3` seconds from now: the kinds
/// become known (if they were not), with the attempts `$4` (one per kind, NULL: 3) stated when
/// `$5` (migration 0021; a changed value is written, an equal one is left alone), the worker's
/// rows are written or refreshed, and expired rows of other replicas (which died without
/// unregistering) are deleted, skipping rows another refresh is deleting. Run after
/// [`LOCK_KINDS`] for `$1`, in its own statement, so that it sees a forget that committed while
/// it waited.
pub(crate) const REGISTER: &str = "\
with known as (
  insert into public.studio_kinds as k (kind, max_attempts)
  select * from unnest($1::text[], $4::int4[])
  on conflict (kind) do update set max_attempts = excluded.max_attempts
   where $5 and k.max_attempts is distinct from excluded.max_attempts
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

/// Every known kind and every kind with a live replica: known or not, and its live replicas.
/// No scan of the jobs: `/metrics` takes the due pending jobs from the queue's gauges.
pub(crate) const REPLICAS: &str = "\
with live as (
  select kind, count(*) as replicas
    from public.studio_kind_replicas
   where fresh_until > now()
   group by kind
)
select coalesce(k.kind, l.kind) as kind, k.kind is not null as known,
       coalesce(l.replicas, 0) as replicas
  from public.studio_kinds k
  full join live l on l.kind = k.kind
 order by 1";

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

/// Starts of each rate-limited kind `$1` in its current window (period `$2`, seconds, ending
/// now; migration 0015), for the `kinds` listing.
pub(crate) const STARTS_IN_WINDOW: &str = "\
select k.kind, coalesce(sum(s.jobs), 0)::int8
  from unnest($1::text[], $2::float8[]) as k(kind, secs)
  left join public.studio_kind_starts s
    on s.kind = k.kind and s.started_at > now() - make_interval(secs => k.secs)
 group by k.kind";
