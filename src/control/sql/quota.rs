//! Statements of `control::quota` (the table and its trigger: migrations 0016, 0019).

/// The columns of a quota row as [`crate::control::quota::Quota`] reads them.
macro_rules! quota_columns {
    () => {
        "kind, max_unfinished, max_created, extract(epoch from per)::float8 as per_seconds, \
         updated_at, updated_by"
    };
}

/// Every quota, the default (`*`) first, then by kind.
pub(crate) const LIST: &str = concat!(
    "select ",
    quota_columns!(),
    " from public.studio_quotas order by kind = '*' desc, kind"
);

/// Set the quota of `$1` (a kind or `*`) as a whole: limits `$2`, `$3` per `$4` seconds, by `$5`.
pub(crate) const SET: &str = concat!(
    "\
insert into public.studio_quotas as q (kind, max_unfinished, max_created, per, updated_by)
values ($1, $2, $3, make_interval(secs => $4::float8), $5)
on conflict (kind) do update
   set max_unfinished = excluded.max_unfinished, max_created = excluded.max_created,
       per = excluded.per, updated_at = now(), updated_by = excluded.updated_by
returning ",
    quota_columns!()
);

/// Remove the quota of `$1`; returns the row that was there.
pub(crate) const CLEAR: &str = concat!(
    "delete from public.studio_quotas where kind = $1 returning ",
    quota_columns!()
);
