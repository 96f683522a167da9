//! Every statement the queue runs, in one place.
//!
//! Conventions:
//! - `$now` parameters are `coalesce($n::timestamptz, now())`, so tests can move time forward
//!   without sleeping; production passes NULL and the database clock decides.
//! - Status values are literals, never parameters, so the planner matches them against the partial
//!   indexes' predicates.
//! - Every transition of a running job is fenced by id, status, owner (`locked_by`) and attempt; a
//!   statement that matches nothing means the lease was lost.

/// Columns returned for a claimed job (see `ClaimedJob`).
macro_rules! claimed_columns {
    () => {
        "j.id, j.user_id, j.kind, j.input, j.priority, j.run_at, j.attempt, j.max_attempts, \
         j.created_at, j.lease_expires_at, (j.cancel_requested_at is not null) as cancel_requested"
    };
}

/// The end of every claim: the rows chosen by a `next` CTE become running under worker `$3` with
/// a lease of `$4` seconds from `now`, and come back as `ClaimedJob`s.
///
/// The chosen ids are passed as an array so that the update always finds them by primary key:
/// a join against `next` let a generic plan (which cannot know the LIMIT) pick a hash join over
/// the whole table, a claim whose cost grew with every row ever kept.
macro_rules! take_claimed {
    () => {
        concat!(
            "update public.studio_jobs j
   set status = 'running', attempt = j.attempt + 1, locked_by = $3,
       lease_expires_at = (select ts from now) + make_interval(secs => $4::float8),
       started_at = (select ts from now), updated_at = (select ts from now),
       progress = 0, progress_message = null
 where j.id = any(array(select id from next))
returning ",
            claimed_columns!()
        )
    };
}

/// How every claim (FIFO or fair, capped or not) and the rescue begin their transaction: the
/// planner may walk indexes only, in their order. These statements read a few rows in index
/// order under a LIMIT; on a table without fresh statistics (after a migration, after a burst,
/// before autovacuum's ANALYZE) the planner estimates a handful of pending jobs where there are
/// thousands, and a bitmap scan plus a sort of every pending job then looks as cheap as the
/// ordered walk: 20-44 ms per claim instead of about 1 (issue 19). With bitmap and sequential
/// scans off, what is left is the ordered walk of the index each statement was written for
/// (migration 0022 keeps the quota index out of their reach); tests assert the plans with and
/// without statistics. `set local` ends with the transaction, so pooled connections keep their
/// settings for everything else.
pub(crate) const CLAIM_BEGIN: &str =
    "begin; set local enable_bitmapscan = off; set local enable_seqscan = off";

/// The CTE every claim reads its kinds from: those of the kinds in `$1` that are not paused
/// (migration 0013). Filtering the kinds once, rather than each candidate row, keeps a paused kind
/// with many pending jobs from costing the claims of the other kinds anything: its rows fail the
/// same `kind = any(..)` test the claim always applied.
macro_rules! unpaused_kinds {
    () => {
        "unpaused as (
  select array(select k from unnest($1::text[]) as k
                where not exists (select 1 from public.studio_paused_kinds p where p.kind = k))
           as kinds
)"
    };
}

/// Every column of a job row (see `Job`), and the operators' detail of its current attempt's
/// failure (`studio_job_failures`, 0023) while the row carries an error. The statements that use
/// it name the table `studio_jobs` without an alias.
macro_rules! job_columns {
    () => {
        "id, user_id, kind, input, status, priority, run_at, attempt, max_attempts, progress, \
         progress_message, result, error, \
         (select f.detail from public.studio_job_failures f \
           where f.job_id = studio_jobs.id and f.attempt = studio_jobs.attempt \
             and studio_jobs.error is not null) as error_detail, \
         locked_by, lease_expires_at, \
         cancel_requested_at, created_at, updated_at, started_at, finished_at"
    };
}

/// Insert one job. `$6` NULL means "now"; `$7` NULL means the kind's attempts, filled in by
/// migration 0021's trigger (the kind's `studio_kinds.max_attempts`, else 3).
pub(crate) const ENQUEUE_ONE: &str = "\
insert into public.studio_jobs (id, user_id, kind, input, priority, run_at, max_attempts)
values ($1, $2, $3, $4, $5, coalesce($6, now()), $7)";

/// Insert many jobs in one statement (one trigger call, one NOTIFY). A row without attempts
/// takes its kind's here, in the statement, rather than through 0021's row trigger (a PL/pgSQL
/// call per row, ≈ a quarter of a large bulk enqueue): the same rule, `studio_kinds.max_attempts`
/// else 3, which `jobs_enqueued_without_max_attempts_get_the_database_default` holds equal to
/// the trigger's. A row of an unknown kind gets 3 and is refused (0020).
pub(crate) const ENQUEUE_MANY: &str = "\
insert into public.studio_jobs (id, user_id, kind, input, priority, run_at, max_attempts)
select t.id, t.user_id, t.kind, t.input, t.priority, coalesce(t.run_at, now()),
       coalesce(t.max_attempts, k.max_attempts, 3)
  from unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::int2[], $6::timestamptz[],
              $7::int4[]) as t(id, user_id, kind, input, priority, run_at, max_attempts)
  left join public.studio_kinds k on k.kind = t.kind";

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

/// Extend the leases of this worker's running jobs; returns the jobs still held, with whether a
/// cancellation was requested. Jobs missing from the result were lost.
pub(crate) const HEARTBEAT: &str = "\
update public.studio_jobs j
   set lease_expires_at = coalesce($4::timestamptz, now()) + make_interval(secs => $3::float8)
  from unnest($1::uuid[], $2::int4[]) as l(id, attempt)
 where j.id = l.id and j.attempt = l.attempt and j.status = 'running' and j.locked_by = $5
returning j.id, (j.cancel_requested_at is not null) as cancel_requested";

/// Record progress (0..100) and an optional message for a running job.
pub(crate) const PROGRESS: &str = "\
update public.studio_jobs
   set progress = $4, progress_message = $5, updated_at = now()
 where id = $1 and attempt = $2 and status = 'running' and locked_by = $3
returning (cancel_requested_at is not null) as cancel_requested";

/// Mark many running jobs succeeded in one statement; returns the ids that were still held.
pub(crate) const COMPLETE_MANY: &str = "\
update public.studio_jobs j
   set status = 'succeeded', result = c.result, error = null, progress = 100,
       finished_at = now(), updated_at = now(), locked_by = null, lease_expires_at = null
  from unnest($1::uuid[], $2::int4[], $3::jsonb[]) as c(id, attempt, result)
 where j.id = c.id and j.attempt = c.attempt and j.status = 'running' and j.locked_by = $4
returning j.id";

/// Record a failed attempt: `$6` the user's message, `$7` the operator's detail (or NULL, then
/// nothing more is written), kept apart from the users' row in `studio_job_failures` (0023).
/// `$4` says whether the error is retryable; the database decides the
/// outcome from what it knows now (attempts left, cancellation requested):
/// cancelled if cancellation was requested, pending after `$5` seconds if retryable with
/// attempts left, failed otherwise.
pub(crate) const FAIL: &str = "\
with decision as (
  select id, case
           when cancel_requested_at is not null then 'cancelled'
           when $4 and attempt < max_attempts then 'pending'
           else 'failed'
         end as next_status
    from public.studio_jobs
   where id = $1 and attempt = $2 and status = 'running' and locked_by = $3
   for update
),
detail as (
  insert into public.studio_job_failures (job_id, attempt, detail)
  select id, $2, $7 from decision where $7::text is not null
  on conflict (job_id, attempt) do update set detail = excluded.detail, created_at = now()
)
update public.studio_jobs j
   set status = d.next_status,
       run_at = case when d.next_status = 'pending'
                     then now() + make_interval(secs => $5::float8) else j.run_at end,
       finished_at = case when d.next_status = 'pending' then null else now() end,
       -- A retry starts from scratch; the error says why it is retried.
       progress = case when d.next_status = 'pending' then 0 else j.progress end,
       progress_message = case when d.next_status = 'pending' then null else j.progress_message end,
       error = $6, updated_at = now(), locked_by = null,
       lease_expires_at = null
  from decision d
 where j.id = d.id and j.attempt = $2 and j.status = 'running' and j.locked_by = $3
returning j.status, j.run_at";

/// The worker stops a running job because cancellation was requested (or it timed out waiting).
pub(crate) const CANCEL_RUNNING: &str = "\
update public.studio_jobs
   set status = 'cancelled', error = $4, finished_at = now(), updated_at = now(),
       locked_by = null, lease_expires_at = null
 where id = $1 and attempt = $2 and status = 'running' and locked_by = $3";

/// Put a running job back to pending without using up its attempt (worker shutdown), looking
/// like any pending job: no error, no progress (the history records the requeue). A job whose
/// cancellation was requested is cancelled instead.
pub(crate) const REQUEUE: &str = "\
update public.studio_jobs
   set status = case when cancel_requested_at is null then 'pending' else 'cancelled' end,
       attempt = case when cancel_requested_at is null then attempt - 1 else attempt end,
       finished_at = case when cancel_requested_at is null then null else now() end,
       progress = case when cancel_requested_at is null then 0 else progress end,
       progress_message = case when cancel_requested_at is null then null else progress_message end,
       run_at = now(),
       error = case when cancel_requested_at is null then null else 'cancelled by request' end,
       updated_at = now(), locked_by = null, lease_expires_at = null
 where id = $1 and attempt = $2 and status = 'running' and locked_by = $3
returning status";

/// Return running jobs whose lease expired to pending (or failed when no attempt is left, or
/// cancelled when cancellation was requested). SKIP LOCKED and the re-check in the UPDATE make
/// concurrent rescuers in every replica safe: each expired job is rescued exactly once.
pub(crate) const RESCUE_EXPIRED: &str = "\
with now as (select coalesce($2::timestamptz, now()) as ts),
expired as (
  select id, locked_by from public.studio_jobs
   where status = 'running' and lease_expires_at < (select ts from now)
   order by lease_expires_at
   limit $1
   for update skip locked
),
decision as (
  select j.id, e.locked_by, case
           when j.cancel_requested_at is not null then 'cancelled'
           when j.attempt < j.max_attempts then 'pending'
           else 'failed'
         end as next_status
    from public.studio_jobs j join expired e on e.id = j.id
),
detail as (
  insert into public.studio_job_failures (job_id, attempt, detail, created_at)
  select d.id, j.attempt, 'lease expired: worker ' || d.locked_by || ' stopped renewing it',
         (select ts from now)
    from decision d join public.studio_jobs j on j.id = d.id
  on conflict (job_id, attempt) do update set detail = excluded.detail, created_at = excluded.created_at
)
update public.studio_jobs j
   set status = d.next_status,
       finished_at = case when d.next_status = 'pending' then null else (select ts from now) end,
       -- Back to pending it looks like any pending job (the history records the rescue); a
       -- job that ends here says why. Users read `error`: no worker host in it.
       error = case when d.next_status = 'pending' then null
                    else 'lease expired: the worker stopped renewing it' end,
       progress = case when d.next_status = 'pending' then 0 else j.progress end,
       progress_message = case when d.next_status = 'pending' then null else j.progress_message end,
       updated_at = (select ts from now), locked_by = null, lease_expires_at = null
  from decision d
 where j.id = d.id and j.status = 'running'
returning j.id, j.kind, j.status, d.locked_by as previous_worker";

/// One job by id.
pub(crate) const GET_JOB: &str = concat!(
    "select ",
    job_columns!(),
    " from public.studio_jobs where id = $1"
);

/// A job's history, oldest first.
/// The operators' detail is that of the attempt the event ended (`studio_job_failures`, 0023).
pub(crate) const JOB_EVENTS: &str = "\
select e.id, e.job_id, e.user_id, e.from_status, e.to_status, e.attempt, e.worker, e.message,
       case when e.to_status in ('failed', 'cancelled')
                 or (e.from_status = 'running' and e.to_status = 'pending')
            then (select f.detail from public.studio_job_failures f
                   where f.job_id = e.job_id and f.attempt = e.attempt)
       end as detail,
       e.created_at
  from public.studio_job_events e
 where e.job_id = $1
 order by e.id";

/// Operator: cancel a pending job at once, or request cancellation of a running one.
pub(crate) const OPERATOR_CANCEL: &str = concat!(
    "\
update public.studio_jobs
   set status = case when status = 'pending' then 'cancelled' else status end,
       finished_at = case when status = 'pending' then now() else finished_at end,
       error = case when status = 'pending' then $2 else error end,
       cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
 where id = $1 and status in ('pending', 'running')
returning ",
    job_columns!()
);

/// What an operator's retry sets: the job is pending now, with at least one attempt left and
/// nothing left of its last outcome. One definition for `jobs retry ID` and the bulk redrive.
macro_rules! operator_retry_set {
    () => {
        "set status = 'pending', run_at = now(), finished_at = null, cancel_requested_at = null,
       max_attempts = greatest(max_attempts, attempt + 1), error = null, result = null,
       progress = 0, progress_message = null, updated_at = now()"
    };
}

/// Operator: a finished job goes back to pending, with at least one attempt left.
pub(crate) const OPERATOR_RETRY: &str = concat!(
    "update public.studio_jobs\n   ",
    operator_retry_set!(),
    "
 where id = $1 and status in ('succeeded', 'failed', 'cancelled')
returning ",
    job_columns!()
);

/// Operator: retry the finished jobs among `$1` (the dashboard's bulk retry, batch by batch,
/// ids sorted: lock order, see heartbeat); returns the ids moved.
pub(crate) const OPERATOR_RETRY_IDS: &str = concat!(
    "update public.studio_jobs\n   ",
    operator_retry_set!(),
    "
 where id = any($1::uuid[]) and status in ('succeeded', 'failed', 'cancelled')
returning id"
);

/// Operator: cancel the pending jobs among `$1` and ask the running ones to stop, with the
/// single cancel's transition; returns the ids changed.
pub(crate) const OPERATOR_CANCEL_IDS: &str = "\
update public.studio_jobs
   set status = case when status = 'pending' then 'cancelled' else status end,
       finished_at = case when status = 'pending' then now() else finished_at end,
       error = case when status = 'pending' then $2 else error end,
       cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
 where id = any($1::uuid[]) and status in ('pending', 'running')
   and (status = 'pending' or cancel_requested_at is null)
returning id";

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

/// Claim up to `$2` due jobs of the kinds in `$1` in fair order: round robin over the users with
/// due work, starting after user `$6` and wrapping around (user id order), each user's jobs by
/// priority and due time. `$7` > 0 caps each user's running jobs (counted in this statement).
///
/// `after` and `wrapped` are loose index scans over `studio_jobs_user_pending_idx`: together they
/// visit at most `$2` users however many jobs each has queued. Each step orders by that index's
/// whole key, not just `user_id` (the same first row): `studio_jobs_user_created_idx` also
/// yields users in order, and with statistics that call most jobs pending the planner walked it,
/// past every finished job; for it, the full order would need a sort of each user's jobs. Each user gets a quota of
/// `ceil($2 / users)` locked candidates; the batch takes everyone's first job, then everyone's
/// second, and so on (higher priority first within a turn).
pub(crate) const CLAIM_FAIR: &str = concat!(
    "\
with recursive now as (select coalesce($5::timestamptz, now()) as ts),
",
    unpaused_kinds!(),
    ",
after(user_id, n) as (
  (select j.user_id, 1 from public.studio_jobs j
    where j.status = 'pending' and j.run_at <= (select ts from now) and j.kind = any((select kinds from unpaused)::text[])
      and j.user_id > $6::uuid
    order by j.user_id, j.priority desc, j.run_at, j.id
    limit 1)
  union all
  select (select j.user_id from public.studio_jobs j
           where j.status = 'pending' and j.run_at <= (select ts from now)
             and j.kind = any((select kinds from unpaused)::text[]) and j.user_id > u.user_id
           order by j.user_id, j.priority desc, j.run_at, j.id
           limit 1),
         u.n + 1
    from after u
   where u.user_id is not null and u.n < $2
),
wrapped(user_id, n) as (
  (select j.user_id, 1 from public.studio_jobs j
    where j.status = 'pending' and j.run_at <= (select ts from now) and j.kind = any((select kinds from unpaused)::text[])
      and $6::uuid <> '00000000-0000-0000-0000-000000000000'::uuid and j.user_id <= $6::uuid
      and (select count(*) from after where user_id is not null) < $2
    order by j.user_id, j.priority desc, j.run_at, j.id
    limit 1)
  union all
  select (select j.user_id from public.studio_jobs j
           where j.status = 'pending' and j.run_at <= (select ts from now)
             and j.kind = any((select kinds from unpaused)::text[]) and j.user_id > u.user_id and j.user_id <= $6::uuid
           order by j.user_id, j.priority desc, j.run_at, j.id
           limit 1),
         u.n + 1
    from wrapped u
   where u.user_id is not null
     and u.n < $2 - (select count(*) from after where user_id is not null)
),
visited as (
  select user_id, n from after where user_id is not null
  union all
  select user_id, n + $2 from wrapped where user_id is not null
),
running as (
  select r.user_id, count(*)::int as n from public.studio_jobs r
   where r.status = 'running' and $7::int > 0 and r.user_id in (select user_id from visited)
   group by r.user_id
),
-- users at their cap take no turn (and no share of the quota)
found as (
  select v.user_id, v.n from visited v left join running r on r.user_id = v.user_id
   where $7::int = 0 or coalesce(r.n, 0) < $7::int
),
quota as (select ceil($2::numeric / greatest(count(*), 1))::int as per_user from found),
candidates as (
  select c.id, c.priority, f.n as user_order,
         row_number() over (partition by f.user_id order by c.priority desc, c.run_at, c.id) as turn
    from found f
    left join running r on r.user_id = f.user_id
    cross join lateral (
      select j.id, j.priority, j.run_at from public.studio_jobs j
       where j.user_id = f.user_id and j.status = 'pending' and j.run_at <= (select ts from now)
         and j.kind = any((select kinds from unpaused)::text[])
       order by j.priority desc, j.run_at, j.id
       limit greatest(0, least((select per_user from quota),
                               case when $7::int > 0 then $7::int - coalesce(r.n, 0) else $2::int end))
       for update skip locked
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

// Start rates (migration 0015): both run inside a capped claim's transaction, under the
// capped-claim advisory lock, with the claim's `$now` (see `claim_rate`).

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

// ---------------------------------------------------------------------------------------------
// Bulk redrive (issue 13): `jobs retry --status failed|cancelled [filters]`, in batches, through
// the single retry's transition (`operator_retry_set!`), so the history trigger records each.
// Filters: `$1` status, `$2` kind or NULL, `$3` finished at or after (or NULL), `$4` a LIKE
// pattern matched case-insensitively against the error or the error detail (or NULL), `$5` the
// start of the run: a job retried in this run and finished again since is not taken twice.
// ---------------------------------------------------------------------------------------------

/// The filter shared by [`REDRIVE_BATCH`] and [`REDRIVABLE`].
macro_rules! redrive_filter {
    () => {
        "status = $1 and status in ('failed', 'cancelled')
     and ($2::text is null or kind = $2)
     and ($3::timestamptz is null or finished_at >= $3)
     and ($4::text is null or error ilike $4
          or exists (select 1 from public.studio_job_failures f
                      where f.job_id = studio_jobs.id and f.attempt = studio_jobs.attempt
                        and f.detail ilike $4))
     and updated_at < $5"
    };
}

/// Move up to `$6` matching jobs back to pending; returns their ids.
pub(crate) const REDRIVE_BATCH: &str = concat!(
    "\
with chosen as (
  select id from public.studio_jobs
   where ",
    redrive_filter!(),
    "
   order by finished_at, id
   limit $6
   for update skip locked
)
update public.studio_jobs
   ",
    operator_retry_set!(),
    "
 where id = any(array(select id from chosen)) and status in ('failed', 'cancelled')
returning id"
);

/// How many jobs a redrive would move (`--dry-run`).
pub(crate) const REDRIVABLE: &str = concat!(
    "select count(*) from public.studio_jobs where ",
    redrive_filter!()
);

/// The database's clock: the start of a redrive run.
pub(crate) const DB_NOW: &str = "select now()";

// ---------------------------------------------------------------------------------------------
// Job API (issue 12): idempotent enqueue, and the statements run as a signed-in user inside
// `user::UserTx` (role `authenticated`, RLS decides what each one sees).
// ---------------------------------------------------------------------------------------------

/// Columns of a job as its owner sees it (see `user::UserJob`).
macro_rules! user_job_columns {
    () => {
        "id, user_id, kind, input, status, priority, run_at, attempt, max_attempts, progress, \
         progress_message, result, error, cancel_requested_at, created_at, updated_at, \
         started_at, finished_at, idempotency_key, created_by_service"
    };
}

/// Insert one job with an idempotency key; returns nothing when the user already has a job with
/// that key (a concurrent first insert is waited for). `$8` is the key; `$7` as in
/// [`ENQUEUE_ONE`].
pub(crate) const ENQUEUE_ONE_IDEMPOTENT: &str = "\
insert into public.studio_jobs
    (id, user_id, kind, input, priority, run_at, max_attempts, idempotency_key)
values ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8)
on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
returning id";

/// The id of a user's job with an idempotency key.
pub(crate) const JOB_BY_IDEMPOTENCY_KEY: &str = "\
select id from public.studio_jobs where user_id = $1 and idempotency_key = $2";

/// Enter the user's identity for the rest of the transaction, as PostgREST does: role, verified
/// claims, and the service acting for the user (empty: none).
pub(crate) const USER_SETTINGS: &str = "\
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', $1, true),
       set_config('studio.created_by_service', $2, true)";

/// [`USER_SETTINGS`] with BEGIN in one simple query (one round trip); the arguments are
/// already-quoted literals (see `user::dollar_quoted`).
pub(crate) fn user_begin(claims_literal: &str, service_literal: &str) -> String {
    format!(
        "begin; select set_config('role', 'authenticated', true), \
         set_config('request.jwt.claims', {claims_literal}, true), \
         set_config('studio.created_by_service', {service_literal}, true)"
    )
}

/// Create the caller's own job (user_id from the claims). Nothing comes back when the caller
/// already has a job with the same idempotency key `$6`.
pub(crate) const USER_CREATE: &str = concat!(
    "\
insert into public.studio_jobs (id, kind, input, priority, run_at, idempotency_key)
values ($1, $2, $3, $4, coalesce($5, now()), $6)
on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
returning ",
    user_job_columns!()
);

/// The caller's job with idempotency key `$1`.
pub(crate) const USER_JOB_BY_KEY: &str = concat!(
    "select ",
    user_job_columns!(),
    " from public.studio_jobs where user_id = (select auth.uid()) and idempotency_key = $1"
);

/// One of the caller's jobs.
pub(crate) const USER_JOB: &str = concat!(
    "select ",
    user_job_columns!(),
    " from public.studio_jobs where id = $1"
);

/// The caller's jobs, newest first, after the keyset cursor (`$3`, `$4`) when given, of kind
/// `$2` and of the kinds `$6` when given.
pub(crate) const USER_LIST: &str = concat!(
    "select ",
    user_job_columns!(),
    " from public.studio_jobs
 where user_id = (select auth.uid())
   and ($1::text is null or status = $1)
   and ($2::text is null or kind = $2)
   and ($3::timestamptz is null or (created_at, id) < ($3, $4::uuid))
   and ($6::text[] is null or kind = any($6))
 order by created_at desc, id desc
 limit $5"
);

/// A job's history after event `$2` (0: all), oldest first; RLS shows only the caller's. The
/// API's events carry neither the worker id nor an operator's detail (0023 keeps the latter in
/// `studio_job_failures`, which users cannot read).
pub(crate) const USER_EVENTS: &str = "\
select id, job_id, user_id, from_status, to_status, attempt, null::text as worker, message,
       null::text as detail, created_at
  from public.studio_job_events
 where job_id = $1 and id > $2
 order by id";

/// Cancel through the users' function, so the API and the Data API share one definition.
pub(crate) const USER_CANCEL: &str = concat!(
    "select ",
    user_job_columns!(),
    " from public.cancel_studio_job($1)"
);
