//! The claims (FIFO, fair, by id), how every claim's transaction begins, and what a capped
//! claim reads under its lock. These are the hot statements: `hot_statements` hands them to the
//! tests that assert their plans.

/// How every claim (FIFO or fair, capped or not) and the rescue begin their transaction: the
/// planner may walk indexes only, in their order. These statements read a few rows in index order
/// under a LIMIT; on a table without fresh statistics (after a migration, after a burst, before
/// autovacuum's ANALYZE) the planner estimates a handful of pending jobs where there are thousands,
/// and a bitmap scan plus a sort of every pending job then looks as cheap as the ordered walk:
/// 20-44 ms per claim instead of about 1 (issue 19). With bitmap and sequential scans off, what is
/// left is the ordered walk of the index each statement was written for (migration 0022 keeps the
/// quota index out of their reach). Sorts are off as well: on statistics taken while the queue was
/// drained (every job finished), the planner expected no pending job and read a user's next jobs
/// from the claim index (every user's pending jobs) rather than the per-user one, a walk of the
/// whole backlog for each light user, since sorting an expected single row costs nothing; the few
/// sorts the fair claim needs (of rows it already took) have no alternative and stay. Tests assert
/// the plans with and without statistics, and with statistics of a drained queue. JIT is off too:
/// the planner costs these statements by the whole backlog they could read (not the few rows the
/// LIMIT takes), so from a backlog of some hundred thousand jobs their cost passes
/// `jit_above_cost`, and on a server with JIT (PostgreSQL's default where LLVM is installed, as
/// here) every claim compiled 131 functions first: 93 of its 100 ms, a backlog of 1,000,000 burnt
/// down at 2,500 jobs/s instead of 9,000 (issue 19). `set local` ends with the transaction, so
/// pooled connections keep their settings for everything else.
pub(crate) const CLAIM_BEGIN: &str = "begin; set local enable_bitmapscan = off; \
     set local enable_seqscan = off; set local enable_sort = off; set local jit = off";

/// Claim up to `$2` due jobs of the kinds in `$1` for worker `$3`, with a lease of `$4` seconds.
///
/// The CTE selects and locks the rows (SKIP LOCKED: rows another claimer holds are passed over,
/// never waited for), and is an optimisation fence so the LIMIT is applied before the UPDATE.
/// Per-kind limits and per-user fairness plug in as other ways of choosing `next`.
pub(crate) const CLAIM_FIFO: &str = concat!(
    "\
with now as (select coalesce($5::timestamptz, now()) as ts),
",
    unpaused_kinds!(),
    ",
next as (
  select id from public.studio_jobs
   where status = 'pending' and run_at <= (select ts from now)
     and kind = any((select kinds from unpaused)::text[])
   order by priority desc, run_at, id
   limit $2
   for update skip locked
)
",
    take_claimed!()
);

/// Claim those of the jobs `$6` that are still pending and due, of the kinds in `$1` (at most
/// `$2`): the idle worker's fast path for jobs it was just told about. Primary-key lookups, so
/// its cost does not depend on what else the table holds.
///
/// "Pending" is said as "neither running nor finished" (the same rows: the status CHECK of 0002
/// allows no other value) so that no partial index on `status = 'pending'` can serve it: on a
/// table without statistics the planner took the claim index with `id = any($6)` as a filter,
/// a walk of every pending job for each announced one.
pub(crate) const CLAIM_NAMED: &str = concat!(
    "\
with now as (select coalesce($5::timestamptz, now()) as ts),
",
    unpaused_kinds!(),
    ",
next as (
  select id from public.studio_jobs
   where id = any($6::uuid[]) and status not in ('running', 'succeeded', 'failed', 'cancelled')
     and run_at <= (select ts from now)
     and kind = any((select kinds from unpaused)::text[])
   order by priority desc, run_at, id
   limit $2
   for update skip locked
)
",
    take_claimed!()
);

/// Claim up to `$2` due jobs of the kinds in `$1` in fair order: round robin over the users with
/// due work, starting after user `$6` and wrapping around (user id order), each user's jobs by
/// priority and due time. `$7` > 0 caps each user's running jobs (counted in this statement).
///
/// `after` and `wrapped` are loose index scans over `studio_jobs_user_pending_idx`: together they
/// visit at most `$2` users however many jobs each has queued. Each step orders by that index's
/// whole key, not just `user_id` (the same first row): `studio_jobs_user_created_idx` also
/// yields users in order, and with statistics that call most jobs pending the planner walked it,
/// past every finished job; for it, the full order would need a sort of each user's jobs. Each
/// step also returns the user's first due job, where the user's walk (`candidates`) starts.
/// Each user gets a quota of `ceil($2 / users)` locked candidates; the batch takes everyone's
/// first job, then everyone's second, and so on (higher priority first within a turn).
pub(crate) const CLAIM_FAIR: &str = concat!(
    "\
with recursive now as (select coalesce($5::timestamptz, now()) as ts),
",
    unpaused_kinds!(),
    ",
after(user_id, priority, run_at, id, n) as (
  (select j.user_id, j.priority, j.run_at, j.id, 1 from public.studio_jobs j
    where j.status = 'pending' and j.run_at <= (select ts from now) and j.kind = any((select kinds from unpaused)::text[])
      and j.user_id > $6::uuid
    order by j.user_id, j.priority desc, j.run_at, j.id
    limit 1)
  union all
  select s.user_id, s.priority, s.run_at, s.id, u.n + 1
    from after u
    cross join lateral (
      select j.user_id, j.priority, j.run_at, j.id from public.studio_jobs j
       where j.status = 'pending' and j.run_at <= (select ts from now)
         and j.kind = any((select kinds from unpaused)::text[]) and j.user_id > u.user_id
       order by j.user_id, j.priority desc, j.run_at, j.id
       limit 1
    ) s
   where u.n < $2
),
wrapped(user_id, priority, run_at, id, n) as (
  (select j.user_id, j.priority, j.run_at, j.id, 1 from public.studio_jobs j
    where j.status = 'pending' and j.run_at <= (select ts from now) and j.kind = any((select kinds from unpaused)::text[])
      and $6::uuid <> '00000000-0000-0000-0000-000000000000'::uuid and j.user_id <= $6::uuid
      and (select count(*) from after) < $2
    order by j.user_id, j.priority desc, j.run_at, j.id
    limit 1)
  union all
  select s.user_id, s.priority, s.run_at, s.id, u.n + 1
    from wrapped u
    cross join lateral (
      select j.user_id, j.priority, j.run_at, j.id from public.studio_jobs j
       where j.status = 'pending' and j.run_at <= (select ts from now)
         and j.kind = any((select kinds from unpaused)::text[]) and j.user_id > u.user_id and j.user_id <= $6::uuid
       order by j.user_id, j.priority desc, j.run_at, j.id
       limit 1
    ) s
   where u.n < $2 - (select count(*) from after)
),
visited as (
  select user_id, priority, run_at, id, n from after
  union all
  select user_id, priority, run_at, id, n + $2 from wrapped
),
running as (
  select r.user_id, count(*)::int as n from public.studio_jobs r
   where r.status = 'running' and $7::int > 0 and r.user_id in (select user_id from visited)
   group by r.user_id
),
-- users at their cap take no turn (and no share of the quota)
found as (
  select v.user_id, v.priority, v.run_at, v.id, v.n from visited v
    left join running r on r.user_id = v.user_id
   where $7::int = 0 or coalesce(r.n, 0) < $7::int
),
quota as (select ceil($2::numeric / greatest(count(*), 1))::int as per_user from found),
room as (
  select f.*, greatest(0, least((select per_user from quota),
                                case when $7::int > 0 then $7::int - coalesce(r.n, 0) else $2::int end)) as take
    from found f left join running r on r.user_id = f.user_id
),
candidates as (
  select c.id, c.priority, f.n as user_order,
         row_number() over (partition by f.user_id order by c.priority desc, c.run_at, c.id) as turn
    from room f
    -- The user's next jobs, from the per-user index, starting at the first one the step that
    -- found the user saw (`f`): in this statement's snapshot nothing before it is pending, and
    -- the index entries before it are mostly jobs claimed since the last vacuum, which a walk
    -- from the user's first entry reads again (at a backlog of 1,000,000, thousands of pages
    -- per claim; issue 19). The index's order (priority descending, then due time and id) is
    -- not one B-tree bound, so the walk is two: the rest of the first job's priority from it,
    -- then the lower priorities, read only if the first part runs short. The user is matched
    -- as `= any(array[..])` rather than `=`: an equality would make it a constant to the
    -- planner, so the claim index (pending jobs of every user, in the same order after the
    -- user) would give this order too, and on statistics that count no pending job it looks
    -- as cheap, while it walks every other user's backlog to reach this one's. With sorts off
    -- (`CLAIM_BEGIN`), only the per-user index gives this order.
    cross join lateral (
      select * from (
        select j.id, j.priority, j.run_at from public.studio_jobs j
         where j.user_id = any(array[f.user_id]) and j.priority = f.priority
           and (j.run_at, j.id) >= (f.run_at, f.id)
           and j.status = 'pending' and j.run_at <= (select ts from now)
           and j.kind = any((select kinds from unpaused)::text[])
         order by j.user_id, j.priority desc, j.run_at, j.id
         limit f.take
         for update skip locked
      ) head
      union all
      select * from (
        select j.id, j.priority, j.run_at from public.studio_jobs j
         where j.user_id = any(array[f.user_id]) and j.priority < f.priority
           and j.status = 'pending' and j.run_at <= (select ts from now)
           and j.kind = any((select kinds from unpaused)::text[])
         order by j.user_id, j.priority desc, j.run_at, j.id
         limit f.take
         for update skip locked
      ) rest
      limit f.take
    ) c
),
next as (select id from candidates order by turn, priority desc, user_order limit $2)
",
    take_claimed!()
);

/// Serialises claims that enforce running-job caps, so that each reads counts that include
/// every earlier claim (taken inside the claim's transaction, released at commit).
pub(crate) const CAPPED_CLAIM_LOCK: &str =
    "select pg_advisory_xact_lock(hashtext('studio_jobs.capped_claim'))";

/// Running jobs of the given kinds, counted cluster-wide.
pub(crate) const RUNNING_BY_KIND: &str = "\
select kind, count(*) from public.studio_jobs
 where status = 'running' and kind = any($1::text[])
 group by kind";
