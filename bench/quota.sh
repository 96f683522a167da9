#!/usr/bin/env bash
# What admission quotas (migration 0016) cost an insert, measured in the database with pgbench.
#
#   bench/quota.sh                    # ROUNDS=5, database studio_bench_quota (dropped, recreated)
#
# Three set-ups, alternated in each round on the same database (before each run the jobs are
# emptied and 50,000 pending jobs of 1,000 other users are inserted and analyzed, as in a live
# queue):
#   base    0016's trigger and index dropped: the schema before quotas
#   none    0016 as migrated, no quota rows
#   quotas  0016 with a default quota (100 unfinished, 1,000 created per hour per kind)
# Two workloads:
#   trusted bulk  one connection as studio_worker, 40 statements of 1,000 jobs for one user
#                 (what Queue::enqueue_many sends); figure: jobs/s
#   user single   4,000 one-job INSERT statements as `authenticated`, each with the claims of
#                 one of 100 users (PostgREST's and the job API's shape, without the round
#                 trips: timed inside the database, so the figure is the database's work per
#                 insert); figure: jobs/s
# Commits do not wait for the WAL flush (synchronous_commit off inside the scripts), so the
# figures show the work per insert rather than the disk. Prints each run and the medians. Needs psql and pgbench; DATABASE_URL names a superuser.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=${BENCH_DB:-studio_bench_quota}
ROUNDS=${ROUNDS:-5}
URL="${BASE_URL%/*}/$DB"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

psql -q "$BASE_URL" -c "drop database if exists $DB" -c "create database $DB"
for f in "$ROOT"/migrations/*.sql; do
  PGOPTIONS="-c client_min_messages=error" psql -q -v ON_ERROR_STOP=1 "$URL" -f "$f" >/dev/null
done
psql -q -v ON_ERROR_STOP=1 "$URL" <<'SQL'
insert into auth.users (id) select md5(n::text)::uuid from generate_series(1, 100) n;
-- the kind the workloads insert (0017 refuses a kind nobody declared)
insert into public.studio_kinds (kind, declared_by) values ('render', 'bench/quota.sh');
-- other users, whose jobs make the table the size of a live one (the plans then use the indexes)
insert into auth.users (id) select md5('seed' || n)::uuid from generate_series(1, 1000) n;
-- 0016's objects, to drop and recreate between set-ups
create table bench_quota_ddl as
select pg_get_triggerdef(t.oid) as trigger_def, pg_get_indexdef(i.indexrelid) as index_def
  from pg_trigger t, pg_index i
 where t.tgname = 'studio_jobs_20_quota'
   and i.indexrelid = 'public.studio_jobs_user_kind_unfinished_idx'::regclass;
SQL

cat >"$WORK/trusted.sql" <<'SQL'
begin;
set local synchronous_commit = off;
set local role studio_worker;
insert into public.studio_jobs (user_id, kind, input)
  select md5('1')::uuid, 'render', '{}' from generate_series(1, 1000);
commit;
SQL
cat >"$WORK/user.sql" <<'SQL'
begin;
set local synchronous_commit = off;
set local role authenticated;
do $$
declare
  started timestamptz := clock_timestamp();
begin
  for i in 1..4000 loop
    perform set_config('request.jwt.claims',
      json_build_object('sub', md5((1 + i % 100)::text)::uuid, 'role', 'authenticated')::text,
      true);
    insert into public.studio_jobs (kind, input) values ('render', '{}');
  end loop;
  raise notice 'rate=%', round(4000 / extract(epoch from clock_timestamp() - started));
end
$$;
commit;
SQL

setup() {
  PGOPTIONS="-c client_min_messages=warning" psql -q -v ON_ERROR_STOP=1 "$URL" >/dev/null <<SQL
truncate public.studio_jobs, public.studio_job_events;
delete from public.studio_quotas;
drop trigger if exists studio_jobs_20_quota on public.studio_jobs;
drop index if exists public.studio_jobs_user_kind_unfinished_idx;
do \$\$ begin
  if '$1' <> 'base' then
    execute (select trigger_def from bench_quota_ddl);
    execute (select index_def from bench_quota_ddl);
  end if;
  if '$1' = 'quotas' then
    insert into public.studio_quotas (kind, max_unfinished, max_created, per)
    values ('*', 100, 1000, interval '1 hour');
  end if;
end \$\$;
insert into public.studio_jobs (user_id, kind, input)
  select md5('seed' || (1 + n % 1000))::uuid, 'render', '{}' from generate_series(1, 50000) n;
vacuum analyze public.studio_jobs;
SQL
}

tps() { # pgbench's rate without connection time, in transactions/s
  pgbench -n "$@" "$URL" 2>/dev/null | awk '/^tps = / { print $3; exit }'
}

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for setup in base none quotas; do
    setup "$setup"
    trusted=$(tps -c 1 -t 40 -f "$WORK/trusted.sql")
    trusted=$(awk -v t="$trusted" 'BEGIN { printf "%.0f", t * 1000 }')
    setup "$setup"
    user=$(psql -q "$URL" -f "$WORK/user.sql" 2>&1 | sed -n 's/.*rate=//p')
    echo "round $round  $setup  trusted bulk $trusted jobs/s  user single $user jobs/s"
    results[$setup,trusted]+="$trusted "
    results[$setup,user]+="$user "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
echo "medians of $ROUNDS rounds (jobs/s):"
for setup in base none quotas; do
  printf '  %-7s trusted bulk %8s   user single %6s\n' "$setup" \
    "$(echo "${results[$setup,trusted]}" | median)" "$(echo "${results[$setup,user]}" | median)"
done
