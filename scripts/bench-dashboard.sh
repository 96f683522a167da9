#!/usr/bin/env bash
# Benchmark of the operators' dashboard over a big table (a benchmark, not a test: it prints
# figures and asserts nothing).
#
# Usage: scripts/bench-dashboard.sh [JOBS] [REQUESTS]
#   JOBS      finished jobs to load (default 10000000), plus 10,000 pending and 100 running
#   REQUESTS  requests per page (default 30)
#
# Creates a scratch database `dashboard_bench_<pid>` on the server of $DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres), migrates it with the debug binary, loads the jobs
# with the triggers off (a fixture), runs `studio-worker run` with the dashboard on a free port,
# signs in, requests every page REQUESTS times (curl) and prints p50/p95 per page; then stops
# the worker and drops the database. Needs psql, curl, python3 and a built binary
# (`cargo build`, or `cargo build --release` with STUDIO_BIN=target/release/studio-worker).
#
# STUDIO_BENCH_DB=name keeps the database: the first run creates and loads it, later runs
# migrate it (a new migration meets the loaded table, as in production) and measure again; drop
# it by hand (`drop database name`). Each run prints the database's size.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${1:-10000000}"
REQUESTS="${2:-30}"
BASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BIN="${STUDIO_BIN:-$ROOT/target/debug/studio-worker}"
DB="${STUDIO_BENCH_DB:-dashboard_bench_$$}"
KEEP="${STUDIO_BENCH_DB:+1}"
DB_URL="${BASE_URL%/*}/$DB"
WORK="$(mktemp -d)"
TOKEN="bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
WORKER_PID=""

say() { echo "bench-dashboard: $*" >&2; }
cleanup() {
  [[ -n "$WORKER_PID" ]] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null || true
  [[ -n "$KEEP" ]] || psql "$BASE_URL" -qAtX -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[[ -x "$BIN" ]] || { say "no binary at $BIN: run cargo build"; exit 1; }

EXISTS=$(psql "$BASE_URL" -qAtX -c "select 1 from pg_database where datname = '$DB'")
if [[ -n "$EXISTS" && -n "$KEEP" ]]; then
  say "reusing $DB (migrating it first)"
  start=$(date +%s.%N)
  DATABASE_URL="$DB_URL" "$BIN" migrate >/dev/null
  say "migrated in $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s"
else
psql "$BASE_URL" -qAtX -v ON_ERROR_STOP=1 -c "create database $DB" >/dev/null
DATABASE_URL="$DB_URL" "$BIN" migrate >/dev/null
say "loading $JOBS finished jobs (triggers off)"
start=$(date +%s)
psql "$DB_URL" -qAtX -v ON_ERROR_STOP=1 <<SQL
set session_replication_role = replica;
insert into public.studio_kinds (kind) values ('render'), ('report'), ('thumbnail'), ('upscale'), ('bench');
insert into auth.users (id, email)
select ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid, u || '@example.test'
  from generate_series(1, 10000) u;
insert into public.studio_jobs
    (id, user_id, kind, input, status, priority, run_at, attempt, max_attempts, error,
     created_at, updated_at, started_at, finished_at)
select gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % 10000), 12, '0'))::uuid,
       (array['render', 'report', 'thumbnail', 'upscale'])[1 + i % 4], '{}',
       case when i % 50 = 0 then 'failed' when i % 100 = 1 then 'cancelled' else 'succeeded' end,
       0, t, 1, 3,
       case when i % 50 = 0 then 'disk full on ' || (i % 7) when i % 100 = 1 then 'cancelled by user' end,
       t, t + interval '2 seconds', t + interval '1 second', t + interval '2 seconds'
  from generate_series(1, $JOBS) i,
       lateral (select now() - make_interval(secs => ($JOBS - i) * (172800.0 / $JOBS)) as t) ts;
insert into public.studio_jobs (id, user_id, kind, input, status, run_at, attempt, locked_by,
                                lease_expires_at, started_at)
select gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % 10000), 12, '0'))::uuid,
       (array['render', 'report'])[1 + i % 2], '{}',
       case when i <= 100 then 'running' else 'pending' end, now() - interval '1 minute',
       case when i <= 100 then 1 else 0 end, case when i <= 100 then 'w-' || (i % 4) end,
       case when i <= 100 then now() + interval '30 seconds' end,
       case when i <= 100 then now() end
  from generate_series(1, 10100) i;
analyze;
SQL
say "loaded in $(( $(date +%s) - start )) s"
fi
say "database $DB: $(psql "$DB_URL" -qAtX -c "select pg_size_pretty(pg_database_size(current_database())) || ', ' || count(*) || ' jobs' from public.studio_jobs")"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HASH=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
DATABASE_URL="$DB_URL" \
STUDIO_HTTP__LISTEN= \
STUDIO_KINDS__BENCH__EXECUTOR=command STUDIO_KINDS__BENCH__COMMAND=true \
STUDIO_DASHBOARD__LISTEN="127.0.0.1:$PORT" \
STUDIO_DASHBOARD__OPERATORS__BENCH__SHA256="$HASH" \
STUDIO_DASHBOARD__OPERATORS__BENCH__ROLE=viewer \
STUDIO_WORKER__CONCURRENCY=1 \
  "$BIN" run >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS -o /dev/null -c "$WORK/cookies" --data-urlencode "token=$TOKEN" --data "next=/" \
  "http://localhost:$PORT/login"
COOKIE=$(awk '$6 == "__Host-studio-dashboard" { print $7 }' "$WORK/cookies")
[[ -n "$COOKIE" ]] || { say "sign-in failed"; cat "$WORK/worker.log" >&2; exit 1; }
# the dashboard's rollup catches up a day of minutes, then computes the per-user hour: measure
# the pages once it has (what a dashboard that has been up a minute serves)
start=$(date +%s)
for _ in $(seq 1 600); do
  [[ -n "$(psql "$DB_URL" -qAtX -c "select 1 from public.studio_user_hour limit 1")" ]] && break
  sleep 0.5
done
say "rollup caught up in $(( $(date +%s) - start )) s"
JOB=$(psql "$DB_URL" -qAtX -c "select id from public.studio_jobs where status = 'pending' limit 1")
USER_ID="00000000-0000-4000-8000-000000000007"

printf '%-40s %8s %8s %8s\n' page p50_ms p95_ms max_ms
for page in "/" "/jobs?status=pending" "/jobs?status=running" "/jobs?status=succeeded" \
            "/jobs?status=failed" "/jobs?status=failed&kind=render&error=disk" \
            "/jobs?user=$USER_ID" "/jobs/$JOB" "/users" "/kinds" "/schedules" "/audit"; do
  for _ in $(seq 1 "$REQUESTS"); do
    curl -sS -o /dev/null -w '%{time_total}\n' -H "Cookie: __Host-studio-dashboard=$COOKIE" \
      "http://127.0.0.1:$PORT$page"
  done | python3 -c '
import sys
t = sorted(float(x) * 1000 for x in sys.stdin)
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f"{sys.argv[1][:40]:<40} {p(0.5):8.1f} {p(0.95):8.1f} {t[-1]:8.1f}")' "$page"
done
