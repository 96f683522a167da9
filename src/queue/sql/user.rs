//! The Job API (issue 12): the statements run as a signed-in user inside `user::UserTx` (role
//! `authenticated`, RLS decides what each one sees).

/// Columns of a job as its owner sees it (see `user::UserJob`).
macro_rules! user_job_columns {
    () => {
        "id, user_id, kind, input, status, priority, run_at, attempt, max_attempts, progress, \
         progress_message, result, error, cancel_requested_at, created_at, updated_at, \
         started_at, finished_at, idempotency_key, created_by_service"
    };
}

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
