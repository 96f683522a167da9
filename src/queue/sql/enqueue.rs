//! Inserting jobs: one, many in one statement, or one with an idempotency key. A row without
//! attempts takes its kind's (migration 0021).

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
