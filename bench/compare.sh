#!/usr/bin/env bash
# Side-by-side benchmark: studio-worker and the peer queues of ../shared/bench, on the same
# throwaway PostgreSQL cluster with the same settings, in one run.
#
#   bench/compare.sh                 # RUNS=3; ~35 min on 2 cores
#   RUNS=1 PEERS="graphile-worker:localqueue" bench/compare.sh
#   RUNS=3 SKIP_CEILINGS=1 SKIP_EXTRA=1 PEERS="studio-worker:prefetch studio-worker:fifo \
#     graphile-worker:default graphile-worker:localqueue pg-boss:batch" bench/compare.sh
#                                    # the leaders only, ~20 min
# Our driver's variants: default, prefetch (worker.prefetch = 4 x c), fifo (worker.fairness).
#
# 1. The shared harness runs the peers and our default driver (`studio-worker bench`, the same
#    contract as the peers: throughput at c=8 and c=32, latency) and writes its report; every
#    system's CPU seconds per 1,000 jobs (driver and PostgreSQL, bench/cpu_wrap.py) go to
#    results/cpu-<stamp>.md with the ratios to the best peer.
# 2. On the same cluster (kept running), our extra rows: the opt-in prefetch variant, FIFO vs
#    fair, 1 / 100 / 10,000 users, 1 / 2 / 4 worker processes, and claim cost next to 1,000,000
#    finished jobs. Medians of RUNS runs go to results/studio-<stamp>.md beside the harness's
#    report (BENCH_WORK, default /tmp/studio-bench).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
export BENCH_WORK=${BENCH_WORK:-/tmp/studio-bench}
RUNS=${RUNS:-3}
N=${N:-20000}

if [ -n "${STUDIO_BIN:-}" ]; then
  BIN=$STUDIO_BIN   # a release binary built already
else
  cargo build --release --locked --manifest-path "$ROOT/Cargo.toml"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/studio-worker
fi

if [ -z "${SKIP_PEERS:-}" ]; then
  # The harness builds the apalis driver with DATABASE_URL set, which sends sqlx's macros online
  # against an empty database; build it offline first (the crate ships its query data).
  mkdir -p "$BENCH_WORK"
  (cd "$SHARED" && tar --exclude=./peers/node/node_modules --exclude=./peers/py/.venv \
     --exclude=./peers/rust/target --exclude=./logs --exclude=./results/raw -cf - .) | (cd "$BENCH_WORK" && tar -xf -)
  chmod -R u+w "$BENCH_WORK"
  # CPU per job for every system alike: the copy's phase runner goes through bench/cpu_wrap.py,
  # which adds the driver's and the cluster's CPU seconds (from /proc) to each RESULT line.
  sed -i 's|out=$(timeout 900 bash -c "$cmd" 2>>"$LOG")|out=$(timeout 900 python3 '"$ROOT"'/bench/cpu_wrap.py "${BENCHPG_DIR:-/tmp/benchpg}/data" bash -c "$cmd" 2>>"$LOG")|' \
    "$BENCH_WORK/run_peers.sh"
  grep -q cpu_wrap.py "$BENCH_WORK/run_peers.sh" || { echo "compare.sh: cannot add the CPU wrapper to run_peers.sh" >&2; exit 1; }
  (cd "$BENCH_WORK/peers/rust" && SQLX_OFFLINE=true cargo build --release) >&2 || echo "apalis build failed" >&2
  KEEP_PG=1 RUNS=$RUNS N=$N EXTRA_DRIVER_NAME=studio-worker EXTRA_DRIVER_CMD="$BIN bench" \
    "$BENCH_WORK/run_peers.sh"
  RAW_PEERS=$(ls -td "$BENCH_WORK"/results/raw/*/ | head -1)
  python3 "$ROOT/bench/cpu_report.py" "$RAW_PEERS/peers.jsonl" \
    >"$BENCH_WORK/results/cpu-$(basename "$RAW_PEERS").md"
  echo "CPU per job: $BENCH_WORK/results/cpu-$(basename "$RAW_PEERS").md" >&2
fi
[ -n "${SKIP_EXTRA:-}" ] && exit 0

cd "$BENCH_WORK"
./pg.sh start >/dev/null
export DATABASE_URL=postgres://bench@127.0.0.1:55432/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$BENCH_WORK/results/raw/studio-$STAMP.jsonl
mkdir -p "$(dirname "$RAW")"

row() { # label, bench args...
  local label=$1; shift
  ./pg.sh reset >/dev/null 2>&1
  local line
  line=$("$BIN" bench "$@" 2>/dev/null | sed -n 's/^RESULT //p' | tail -1)
  echo "[$(date -u +%H:%M:%S)] $label: ${line:-FAILED}" >&2
  [ -n "$line" ] && echo "{\"label\":\"$label\",\"r\":$line}" >>"$RAW"
}

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  for c in 8 32; do
    row "fair c=$c" throughput --n "$N" --concurrency "$c"
    row "fifo c=$c" throughput --n "$N" --concurrency "$c" --fairness fifo
    row "prefetch=4c c=$c" throughput --n "$N" --concurrency "$c" --variant prefetch
  done
  for users in 100 10000; do
    row "fair c=32 users=$users" throughput --n "$N" --concurrency 32 --users "$users"
    row "fifo c=32 users=$users" throughput --n "$N" --concurrency 32 --users "$users" --fairness fifo
  done
  for p in 2 4; do
    row "fair c=32 processes=$p" throughput --n "$N" --concurrency 32 --processes "$p"
    row "prefetch=4c c=32 processes=$p" throughput --n "$N" --concurrency 32 --variant prefetch --processes "$p"
  done
  row "latency c=8" latency
  # SQL-only ceiling of our own schema (history, RLS as the worker role, leases): pgbench
  # claim 100 + complete 100 per cycle, 2 clients x 800 cycles (160,000 of 200,000 pending
  # jobs: a fixed amount of work that never runs the queue dry).
  ./pg.sh reset >/dev/null 2>&1
  "$BIN" bench throughput --n 10 >/dev/null 2>&1
  psql -h 127.0.0.1 -p 55432 -U bench -d bench -qc "insert into public.studio_jobs (user_id, kind, input)
    select (select id from auth.users limit 1), 'noop', jsonb_build_object('i', g) from generate_series(1, 200000) g" \
    -c "vacuum analyze public.studio_jobs" -c "checkpoint" >/dev/null
  tps=$(PGOPTIONS='-c role=studio_worker' pgbench -h 127.0.0.1 -p 55432 -U bench -n -M simple -c 2 -j 2 -t 800 \
        -f "$ROOT/bench/sql/studio_cycle100.pgbench" bench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  [ -n "$tps" ] && echo "{\"label\":\"SQL ceiling: claim 100 + complete 100, 2 clients\",\"r\":{\"phase\":\"throughput\",\"process_jobs_per_s\":$(python3 -c "print($tps*100)"),\"peak_rss_mib\":0}}" >>"$RAW"

  row "claim 32, empty history" claim-cost --finished 0
  row "claim 32, 1M finished jobs" claim-cost --finished 1000000
done
[ -n "${KEEP_PG:-}" ] || ./pg.sh stop >/dev/null

python3 - "$RAW" >"$BENCH_WORK/results/studio-$STAMP.md" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rec = json.loads(line)
    rows.setdefault(rec["label"], []).append(rec["r"])
def med(label, key):
    vals = [r[key] for r in rows.get(label, []) if key in r and r[key] == r[key]]
    return statistics.median(vals) if vals else float("nan")
print("# studio-worker extra rows (medians of %d runs)\n" % max(len(v) for v in rows.values()))
print("| configuration | jobs/s | peak RSS MiB | runs |\n|---|---:|---:|---:|")
for label, rs in rows.items():
    if rs[0]["phase"] == "throughput":
        print(f"| {label} | {med(label, 'process_jobs_per_s'):,.0f} | {med(label, 'peak_rss_mib'):.1f} | {len(rs)} |")
print("\n| latency | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|")
for label, rs in rows.items():
    if rs[0]["phase"] == "latency":
        print(f"| {label} | {med(label, 'p50_ms'):.2f} | {med(label, 'p99_ms'):.2f} | {med(label, 'max_ms'):.2f} |")
print("\n| claim cost | finished rows | claim p50 ms | claim p99 ms |\n|---|---:|---:|---:|")
for label, rs in rows.items():
    if rs[0]["phase"] == "claim_cost":
        print(f"| {label} | {med(label, 'finished_rows'):,.0f} | {med(label, 'claim_p50_ms'):.2f} | {med(label, 'claim_p99_ms'):.2f} |")
PY
echo "report: $BENCH_WORK/results/studio-$STAMP.md (peers: $BENCH_WORK/results/peers-*.md)" >&2
