//! Statements of `control::audit` (migration 0024).

/// Record an action; returns its id.
pub(crate) const RECORD: &str = "\
insert into public.studio_operator_actions
    (actor, source, role, action, kind, job_id, filter, rows, detail)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
returning id";

/// List the jobs `$2` as changed by action `$1` and add them to its row count.
pub(crate) const ADD_JOBS: &str = "\
with linked as (
  insert into public.studio_operator_action_jobs (job_id, action_id)
  select unnest($2::uuid[]), $1
  on conflict do nothing
  returning 1
)
update public.studio_operator_actions
   set rows = rows + (select count(*) from linked)
 where id = $1";

/// Columns of an action row (see `Action`).
macro_rules! action_columns {
    () => {
        "a.id, a.at, a.actor, a.source, a.role, a.action, a.kind, a.job_id, a.filter, a.rows, a.detail"
    };
}

/// The newest actions before id `$1` (NULL: from the newest), at most `$2`: the primary key
/// read backwards.
pub(crate) const LIST: &str = concat!(
    "select ",
    action_columns!(),
    " from public.studio_operator_actions a
 where ($1::int8 is null or a.id < $1)
 order by a.id desc
 limit $2"
);

/// The actions that changed job `$1`, oldest first: those naming it and the bulk actions that
/// listed it.
pub(crate) const FOR_JOB: &str = concat!(
    "select ",
    action_columns!(),
    " from public.studio_operator_actions a
 where a.id in (select action_id from public.studio_operator_action_jobs where job_id = $1
                union all
                select id from public.studio_operator_actions where job_id = $1)
 order by a.id
 limit 200"
);
