-- The quota index leaves the claims alone (issue 19).
--
-- 0016's `studio_jobs_user_kind_unfinished_idx` on (user_id, kind) where status in ('pending',
-- 'running') exists for the quota trigger's count of a user's unfinished jobs of a kind. Every
-- claim says `status = 'pending'`, which implies that predicate, so the planner could use the
-- index for the claims too, and did so on a table without statistics: the fair claim's step to
-- "the next user after X" became a BitmapAnd of this index and the claim index (estimated 29
-- rows, actual 17,303) followed by a sort of every pending job, 20-44 ms per claim instead of
-- about 1 ms (docs/benchmarks.md, issue 19).
--
-- The same rows, named by a predicate no claim implies: a job is unfinished exactly when
-- `finished_at is null` (CHECK studio_jobs_finished_iff_terminal, 0002). The quota trigger's
-- count says so too (its only change), so it still counts through this index; the claims
-- cannot use it and walk their own indexes in order (queue::sql, `CLAIM_BEGIN`).
--
-- Lock: building the index scans the table under a SHARE lock (writes wait, reads do not);
-- measured on 1,000,000 jobs in docs/benchmarks.md. The old index is dropped afterwards.

create index studio_jobs_quota_unfinished_idx
  on public.studio_jobs (user_id, kind)
  where finished_at is null;

-- The count of 0019, now with `finished_at is null` (the same rows) so that it matches the
-- index above. Otherwise unchanged.
create or replace function public.studio_jobs_quota() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  declare
    q public.studio_quotas;
    scope text;
    used bigint;
    oldest timestamptz;
    wait_seconds bigint;
  begin
    -- Another user's row (RLS refuses it next) or a kind the CHECK refuses next: not ours.
    if new.user_id is distinct from auth.uid()
       or new.kind !~ '^[a-z][a-z0-9_.-]{0,63}$' then
      return new;
    end if;

    select * into q from public.studio_quotas
     where kind in (new.kind, '*')
     order by kind = '*'
     limit 1;
    if not found or (q.max_unfinished is null and q.max_created is null) then
      return new;
    end if;
    scope := case when q.kind = '*' then 'default' else 'kind' end;

    -- The (user, kind) hold: a row lock held to the commit, and a write that REPEATABLE READ
    -- and SERIALIZABLE transactions cannot pass if another insert wrote it after their snapshot
    -- (40001). Under READ COMMITTED the counts below run in a snapshot taken after the wait.
    insert into public.studio_quota_holds as h (user_id, kind)
    values (new.user_id, new.kind)
    on conflict (user_id, kind) do update set touched_at = pg_catalog.now();

    if q.max_unfinished is not null then
      select count(*) into used from (
        select 1 from public.studio_jobs j
         where j.user_id = new.user_id and j.kind = new.kind
           and j.status in ('pending', 'running') and j.finished_at is null
         limit q.max_unfinished) s;
      if used >= q.max_unfinished and not public.studio_jobs_quota_repeat(new) then
        raise exception 'quota exceeded: at most % unfinished % jobs per user', q.max_unfinished, new.kind
          using errcode = 'PT429',
                detail = format('quota=max_unfinished kind=%s scope=%s limit=%s',
                                new.kind, scope, q.max_unfinished),
                hint = 'wait until one of your unfinished jobs of this kind finishes, or cancel one';
      end if;
    end if;

    if q.max_created is not null then
      select count(*) into used from (
        select 1 from public.studio_jobs j
         where j.user_id = new.user_id and j.created_at > now() - q.per and j.kind = new.kind
         limit q.max_created) s;
      if used >= q.max_created and not public.studio_jobs_quota_repeat(new) then
        -- A slot frees when the max_created-th newest job of the window leaves it.
        select j.created_at into oldest from public.studio_jobs j
         where j.user_id = new.user_id and j.created_at > now() - q.per and j.kind = new.kind
         order by j.created_at desc
         offset q.max_created - 1 limit 1;
        wait_seconds := greatest(1, ceil(extract(epoch from
                          coalesce(oldest, now()) + q.per - now()))::bigint);
        raise exception 'quota exceeded: at most % % jobs per user every % seconds',
                        q.max_created, new.kind, extract(epoch from q.per)::bigint
          using errcode = 'PT429',
                detail = format('quota=max_created kind=%s scope=%s limit=%s per_seconds=%s retry_after=%s',
                                new.kind, scope, q.max_created,
                                extract(epoch from q.per)::bigint, wait_seconds),
                hint = format('try again in %s seconds', wait_seconds);
      end if;
    end if;
    return new;
  end
  $$;

revoke all on function public.studio_jobs_quota() from public, anon, authenticated;

drop index public.studio_jobs_user_kind_unfinished_idx;

select public.studio_mark_schema(22);
