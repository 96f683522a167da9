//! One job and its history, by id, as the worker's role sees them.

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
