#!/usr/bin/env bash
# What migration 0023 (operators' detail apart) costs a live table: applied in one transaction
# (as `migrate` does) to a database at 0020 holding 1,000,000 finished jobs (10 % failed, with
# an operator's detail) and 2,000,000 history rows, while a pgbench client inserts and reads
# jobs as `authenticated` throughout. Prints each statement's time and the slowest probe
# transactions: a probe waiting on a lock would show there.
#
#   bench/migration-0023-locks.sh     # database studio_bench_0023 (dropped, recreated)
#
# Needs psql and pgbench; DATABASE_URL names a superuser (default postgres@127.0.0.1). Not in CI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ADMIN=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=studio_bench_0023
URL=$(printf '%s' "$ADMIN" | sed -E "s#/[^/?]*(\?.*)?\$#/$DB#")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

psql "$ADMIN" -qX -c "drop database if exists $DB" -c "create database $DB"
for f in "$ROOT"/migrations/00{0,1}*.sql "$ROOT"/migrations/0020_*.sql; do
  psql "$URL" -qX -v ON_ERROR_STOP=1 -f "$f" >/dev/null 2>&1
done
echo "== 1,000,000 jobs, 2,000,000 history rows (a few minutes)"
psql "$URL" -qX -v ON_ERROR_STOP=1 <<'SQL'
set session_replication_role = replica;
insert into auth.users (id) select gen_random_uuid() from generate_series(1, 1000);
insert into public.studio_kinds (kind) values ('render') on conflict do nothing;
create temp table u as select id, row_number() over () as n from auth.users;
insert into public.studio_jobs (id, user_id, kind, input, status, attempt, max_attempts, progress,
    result, error, error_detail, created_at, updated_at, started_at, finished_at)
select gen_random_uuid(), (select id from u where n = 1 + g % 1000), 'render',
       jsonb_build_object('scene', g),
       case when g % 10 = 0 then 'failed' else 'succeeded' end, 1, 3, 100,
       case when g % 10 = 0 then null else '{"ok": true}'::jsonb end,
       case when g % 10 = 0 then 'exit status 1' end,
       case when g % 10 = 0 then 'exit status 1: cannot open /srv/render/scenes/' || g || '.blend' end,
       now() - interval '2 days', now() - interval '2 days', now() - interval '2 days',
       now() - interval '2 days'
  from generate_series(1, 1000000) g;
insert into public.studio_job_events (job_id, user_id, from_status, to_status, attempt, worker, created_at)
select id, user_id, 'pending', 'running', 1, 'render-host-7-4242-abcdef12', started_at from public.studio_jobs;
insert into public.studio_job_events (job_id, user_id, from_status, to_status, attempt, worker, message, detail, created_at)
select id, user_id, 'running', status, 1, 'render-host-7-4242-abcdef12', error, error_detail, finished_at
  from public.studio_jobs;
vacuum analyze;
SQL
USER_ID=$(psql "$URL" -qAtX -c "select id from auth.users limit 1")
cat > "$WORK/probe.sql" <<SQL
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"$USER_ID","role":"authenticated"}', true);
insert into public.studio_jobs (kind, input) values ('render', '{"probe": 1}');
select id, status, error from public.studio_jobs where user_id = '$USER_ID' order by created_at desc limit 5;
commit;
SQL
cd "$WORK"
pgbench "$URL" -n -c 1 -T 120 -l -f probe.sql >pgbench.out 2>&1 &
PROBE=$!
sleep 5
echo "== 0023 in one transaction (statement times, ms)"
start=$(date +%s.%N)
{ echo '\timing on'; echo 'begin;'; cat "$ROOT/migrations/0023_operator_detail_apart.sql"; echo 'commit;'; } |
  psql "$URL" -X -v ON_ERROR_STOP=1 2>&1 | grep -E '^Time' | awk '{print $2}' | tr '\n' ' '
echo
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN {printf "whole migration: %.1f s\n", e - s}'
kill -INT $PROBE 2>/dev/null || true
wait $PROBE 2>/dev/null || true
echo "== probes (insert + read as authenticated) during the run"
awk '{print $3 / 1000}' pgbench_log.* | sort -n | tail -3 | tr '\n' ' '; echo "<- slowest (ms)"
awk '{n++; s += $3} END {printf "%d probes, mean %.1f ms\n", n, s / n / 1000}' pgbench_log.*
