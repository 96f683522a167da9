#!/usr/bin/env bash
# Chaos run: several worker replicas against a throwaway PostgreSQL cluster, with random
# `kill -9` and restarts, SIGTERM drains, and PostgreSQL restarts in fast and immediate mode,
# while jobs shorter and longer than the lease keep arriving. Then it checks that:
#   - nothing is lost: every job ends succeeded;
#   - no two executions of a job overlap (each program records its own ticks);
#   - every re-run follows a real crash: each rescued or given-up attempt belonged to a replica
#     that was killed, or lost the database during a PostgreSQL restart;
#   - every history chain is valid (each event starts where the previous one ended, and ends
#     where the job is);
# and prints its figures. Not part of CI (it takes minutes and restarts its own database).
#
# Usage: scripts/chaos.sh [seconds of chaos, default 90] [replicas, default 3]
# Needs: PostgreSQL server binaries (initdb, pg_ctl), psql, python3, cargo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${1:-90}"
REPLICAS="${2:-3}"
say() { echo "chaos: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

BIN_DIR=""
for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
  [[ -x "$d/initdb" ]] && { BIN_DIR="$d"; break; }
done
[[ -n "$BIN_DIR" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
command -v psql >/dev/null || die "psql not found"
command -v python3 >/dev/null || die "python3 not found"

say "building the release binary"
(cd "$ROOT" && cargo build --release --quiet)
WORKER="${CARGO_TARGET_DIR:-$ROOT/target}/release/studio-worker"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/studio-chaos.XXXXXX")"
as_pg() { if [[ $EUID -ne 0 ]]; then "$@"; else runuser -u postgres -- "$@"; fi; }
[[ $EUID -eq 0 ]] && chown postgres: "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  (cd / && as_pg "$BIN_DIR/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1) || true
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else say "kept $WORK"; fi
}
trap cleanup EXIT

PORT=56433
while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
cd /
as_pg "$BIN_DIR/initdb" -D "$WORK/data" -A trust -U postgres --no-sync >/dev/null
pg() { as_pg "$BIN_DIR/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w -t 60 "$@" >/dev/null; }
pg -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK -c max_connections=200" start
SUPER="postgres://postgres@127.0.0.1:$PORT/postgres"
export PGCONNECT_TIMEOUT=5
sql() { psql "$SUPER" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }

DATABASE_URL="$SUPER" "$WORKER" migrate >/dev/null
# The first jobs may be inserted before a replica has registered its kinds: declare them.
for kind in short long; do DATABASE_URL="$SUPER" "$WORKER" kinds declare "$kind" >/dev/null; done
sql "create role chaos_worker login in role studio_worker"
sql "insert into auth.users (id) select gen_random_uuid() from generate_series(1, 5)"

# The program: ticks '<job> <attempt> <ns>' every 100 ms into one file for its whole run (a
# killed run cannot say when it ended, so its last tick does), then succeeds.
cat >"$WORK/job.sh" <<'EOF'
#!/bin/sh
ticks=$(cat | sed -n 's/.*"ticks": *\([0-9]*\).*/\1/p')
i=0
while [ "$i" -lt "$ticks" ]; do
  echo "$STUDIO_JOB_ID $STUDIO_JOB_ATTEMPT $(date +%s%N)" >> "$CHAOS_TICKS"
  sleep 0.1
  i=$((i + 1))
done
echo "$STUDIO_JOB_ID $STUDIO_JOB_ATTEMPT $(date +%s%N)" >> "$CHAOS_TICKS"
echo '{}'
EOF
chmod 755 "$WORK/job.sh"
[[ $EUID -eq 0 ]] && chown -R postgres: "$WORK"
cat >"$WORK/worker.toml" <<EOF
[worker]
concurrency = 8
lease = "3s"
heartbeat_interval = "1s"
poll_interval = "200ms"
rescue_interval = "1s"
shutdown_grace = "1s"
max_backoff = "500ms"

[http]
listen = ""

[kinds.short]
executor = "command"
command = ["$WORK/job.sh"]
env = { CHAOS_TICKS = "$WORK/ticks" }
max_attempts = 50

[kinds.long]
executor = "command"
command = ["$WORK/job.sh"]
env = { CHAOS_TICKS = "$WORK/ticks" }
max_attempts = 50
EOF

: >"$WORK/actions"
REPLICA_PIDS=()
start_replica() {  # $1 = slot
  DATABASE_URL="postgres://chaos_worker@127.0.0.1:$PORT/postgres" STUDIO_LOG__FORMAT=json \
    "$WORKER" run --config "$WORK/worker.toml" >>"$WORK/replica-$1.log" 2>&1 &
  REPLICA_PIDS[$1]=$!
  PIDS+=($!)
}
for ((r = 0; r < REPLICAS; r++)); do start_replica "$r"; done

enqueue() {  # $1 = count; 2/3 short (0.2-1 s), 1/3 long (5-8 s, longer than the lease)
  sql "insert into public.studio_jobs (user_id, kind, input, max_attempts)
       select u, k, jsonb_build_object('ticks', case k when 'short' then 2 + floor(random() * 9)::int
                                                      else 50 + floor(random() * 31)::int end), 50
         from (select (select id from auth.users where g > 0 order by random() limit 1) as u,
                      case when random() < 0.67 then 'short' else 'long' end as k
                 from generate_series(1, $1) as g) as s" >/dev/null
}

say "chaos for ${DURATION}s with $REPLICAS replicas (work dir $WORK)"
KILLS=0 TERMS=0 PG_FAST=0 PG_IMMEDIATE=0
END=$((SECONDS + DURATION))
while ((SECONDS < END)); do
  enqueue $((5 + RANDOM % 20)) || say "enqueue failed (database restarting?)"
  sleep "$((1 + RANDOM % 4))"
  slot=$((RANDOM % REPLICAS))
  pid=${REPLICA_PIDS[$slot]}
  case $((RANDOM % 6)) in
    0|1)
      echo "kill $pid $(date +%s%N)" >>"$WORK/actions"
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      KILLS=$((KILLS + 1))
      sleep "0.$((RANDOM % 10))"
      start_replica "$slot" ;;
    2)
      echo "term $pid $(date +%s%N)" >>"$WORK/actions"
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      TERMS=$((TERMS + 1))
      start_replica "$slot" ;;
    3)
      echo "pg-fast - $(date +%s%N)" >>"$WORK/actions"
      pg -m fast restart || die "PostgreSQL did not restart"
      PG_FAST=$((PG_FAST + 1)) ;;
    4)
      echo "pg-immediate - $(date +%s%N)" >>"$WORK/actions"
      pg -m immediate restart || die "PostgreSQL did not restart"
      PG_IMMEDIATE=$((PG_IMMEDIATE + 1)) ;;
    *) ;;
  esac
  echo "pg-up - $(date +%s%N)" >>"$WORK/actions"
done

say "chaos over; waiting for every job to finish"
deadline=$((SECONDS + 180))
while :; do
  open="$(sql "select count(*) from public.studio_jobs where status in ('pending', 'running')")"
  [[ "$open" == 0 ]] && break
  ((SECONDS < deadline)) || { say "$open jobs still unfinished after 180 s"; break; }
  sleep 1
done
for ((r = 0; r < REPLICAS; r++)); do kill -TERM "${REPLICA_PIDS[$r]}" 2>/dev/null || true; done
for ((r = 0; r < REPLICAS; r++)); do wait "${REPLICA_PIDS[$r]}" 2>/dev/null || true; done

psql "$SUPER" -qAtX -F $'\t' -c "select id, status, attempt from public.studio_jobs" >"$WORK/jobs.tsv"
psql "$SUPER" -qAtX -F $'\t' -c "select id, job_id, from_status, to_status, attempt,
  coalesce(worker, ''), coalesce(message, ''), extract(epoch from created_at) * 1e9
  from public.studio_job_events order by id" >"$WORK/events.tsv"

export KILLS TERMS PG_FAST PG_IMMEDIATE DURATION REPLICAS
python3 - "$WORK" <<'EOF'
import collections, os, sys
work = sys.argv[1]
jobs = {}
for line in open(f"{work}/jobs.tsv"):
    job, status, attempt = line.rstrip("\n").split("\t")
    jobs[job] = (status, int(attempt))
events = collections.defaultdict(list)
for line in open(f"{work}/events.tsv"):
    _, job, frm, to, attempt, worker, message, at = line.rstrip("\n").split("\t")
    events[job].append((frm, to, int(attempt), worker, message, float(at)))
spans = collections.defaultdict(dict)
for line in open(f"{work}/ticks"):
    parts = line.split()
    if len(parts) != 3:
        continue
    job, attempt, at = parts[0], int(parts[1]), int(parts[2])
    lo, hi = spans[job].get(attempt, (at, at))
    spans[job][attempt] = (min(lo, at), max(hi, at))
killed, restarts = set(), []
for line in open(f"{work}/actions"):
    what, pid, at = line.split()
    if what == "kill":
        killed.add(pid)
    if what.startswith("pg-"):
        restarts.append((what, int(at)))

problems = []
lost = [j for j, (s, _) in jobs.items() if s != "succeeded"]
if lost:
    problems.append(f"{len(lost)} jobs did not succeed: {lost[:5]}")
overlaps = 0
for job, attempts in spans.items():
    ordered = sorted(attempts.items())
    for (a1, (_, end1)), (a2, (start2, _)) in zip(ordered, ordered[1:]):
        if start2 <= end1:
            overlaps += 1
            problems.append(f"job {job}: attempt {a2} started {(end1 - start2) / 1e6:.0f} ms before attempt {a1} ended")
reruns = unexplained = given_up = rescued = 0
for job, chain in events.items():
    status, attempt = jobs.get(job, (None, None))
    previous = "pending"
    for frm, to, att, worker, message, at in chain:
        if frm != previous:
            problems.append(f"job {job}: event {frm}->{to} after {previous}")
        previous = to
        if frm == "running" and to == "pending" and "worker shut down" not in message:
            reruns += 1
            # Worker ids are <host>-<pid>-<suffix>; the event names the worker that held the job.
            pid = worker.split("-")[-2] if worker.count("-") >= 2 else ""
            if "lease expired" in message:
                rescued += 1
            elif "gave up" in message:
                given_up += 1
            near_restart = any(0 <= at - r < 10e9 for _, r in restarts)
            if "gave up" in message and not near_restart:
                unexplained += 1
                problems.append(f"job {job}: given up by {worker!r} with no database restart near")
            elif pid not in killed and not ("gave up" in message or "lease expired" in message):
                unexplained += 1
                problems.append(f"job {job}: re-run after {message!r} by {worker!r}")
            elif "lease expired" in message and pid not in killed and not near_restart:
                # A replica cut off by a database restart may lose the race to record its own
                # give-up to another replica's rescuer; anything else is a lease lost in health.
                unexplained += 1
                problems.append(f"job {job}: rescued from a healthy replica ({message!r})")
    if previous != status:
        problems.append(f"job {job}: history ends at {previous}, job is {status}")

env = os.environ
print(f"""
chaos figures
  duration            {env['DURATION']} s, {env['REPLICAS']} replicas, lease 3 s, heartbeat 1 s
  jobs                {len(jobs)} ({sum(1 for s, _ in jobs.values() if s == 'succeeded')} succeeded)
  kill -9             {env['KILLS']}
  SIGTERM             {env['TERMS']}
  PostgreSQL restarts {env['PG_FAST']} fast, {env['PG_IMMEDIATE']} immediate
  re-runs             {reruns} ({rescued} rescued after their lease expired, {given_up} given up by their worker)
  attempts            {sum(a for _, a in jobs.values())} for {len(jobs)} jobs
  overlapping runs    {overlaps}
  unexplained re-runs {unexplained}
  history events      {sum(len(c) for c in events.values())}
""")
if problems:
    print("PROBLEMS:")
    for p in problems[:50]:
        print("  " + p)
    sys.exit(1)
print("OK: nothing lost, no overlap, every re-run explained, every history chain valid")
EOF
