-- Admission quotas hold at every isolation level (issue 13 review, B1): a per-(user, kind) row
-- that every checked insert writes replaces 0016's advisory lock.
--
-- Rule: unchanged from 0016 (limits, default row, trusted bypass by role in the trigger's WHEN
-- clause, the owner guard, repeated idempotency keys, the PT429 message, DETAIL and HINT). What
-- changes is how concurrent inserts of one user and kind are kept from overshooting a limit.
--
-- Why: 0016 took `pg_advisory_xact_lock(user, kind)` and then counted. The counts see the rows
-- committed before the lock was granted only under READ COMMITTED, where each statement takes a
-- new snapshot. Under REPEATABLE READ the snapshot is the transaction's first statement's: two
-- transactions of one user that both took their snapshot, then inserted one after the other,
-- each counted without the other's row and both committed past `max_unfinished = 1`.
--
-- Concurrency: before counting, the trigger upserts the row (user, kind) of
-- `public.studio_quota_holds` (`insert … on conflict do update set touched_at = now()`). That
-- row lock is held to the commit, so concurrent checked inserts of one user and kind run the
-- check one after the other, as the advisory lock did; then:
--   - READ COMMITTED: the counts run in a snapshot taken after the wait, so they include the
--     rows of every checked insert that committed before (the lock is released only once the
--     commit is visible).
--   - REPEATABLE READ, SERIALIZABLE: if another transaction wrote the row after this one's
--     snapshot (whether it is still running, and this insert waits for it, or committed
--     already), the upsert raises SQLSTATE 40001 `could not serialize access due to concurrent
--     update`; the client retries the transaction, whose new snapshot then counts that insert.
--     Otherwise every checked insert that committed is in the snapshot and counts.
-- Mixed levels are covered the same way: it is the reader's level that decides, and every
-- checked insert writes the row. Jobs inserted by trusted roles (not checked, no row written)
-- count from the snapshot that sees them; they are never refused, so a user's insert that did
-- not see one is the same outcome as that user's insert coming first. Finishing or cancelling a
-- job writes no hold: a snapshot that misses it only refuses more. Earlier rows of the same
-- statement still count (the upsert of one's own row never waits). A multi-row insert of
-- several kinds takes the rows in row order, so two such statements of one user in opposite
-- orders can deadlock (40P01, transient), as before; single-kind statements cannot. Other
-- users and kinds never wait. The table keeps one small row per (user, kind) that ever had a
-- checked insert under a quota; `touched_at` is not indexed, so the updates are HOT, and a
-- user's rows go with the user (on delete cascade).
--
-- SQLSTATE: PT429 as in 0016; 40001 (serialization_failure, which `db::is_transient` and
-- PostgREST's clients already treat as retryable) for a REPEATABLE READ or SERIALIZABLE insert
-- that raced another of the same user and kind.
--
-- Role model:
--   anon, authenticated  nothing on `studio_quota_holds` (RLS forced, no grants): only the
--                        trigger function (security definer, the owner's rights) writes it.
--   studio_worker        nothing: trusted inserts are not checked and write no hold.
--   service_role         nothing.
--   The function keeps 0016's grants (none to public, anon or authenticated; the trigger calls
--   it).

create table public.studio_quota_holds (
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null,
  touched_at timestamptz not null default now(),
  primary key (user_id, kind)
);
comment on table public.studio_quota_holds is
  'studio-worker: one row per (user, kind) that each quota-checked insert writes, so that '
  'concurrent inserts of one user and kind are checked one after the other at every isolation level';

revoke all on table public.studio_quota_holds from public, anon, authenticated, studio_worker, service_role;

alter table public.studio_quota_holds enable row level security;
alter table public.studio_quota_holds force row level security;

-- Only the owner (whose rights the trigger function runs with) may touch the rows.
do $owner$
begin
  execute format(
    'create policy studio_quota_holds_owner on public.studio_quota_holds to %I using (true) with check (true)',
    current_user);
end
$owner$;

-- Definer rights as in 0016: users can neither read the quotas and holds nor count rows by
-- themselves; the function only ever counts, and holds, the inserting user's own jobs.
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
           and j.status in ('pending', 'running')
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

select public.studio_mark_schema(19);
