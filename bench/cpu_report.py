#!/usr/bin/env python3
"""Medians per system, variant and concurrency of a harness run's peers.jsonl (with the CPU
fields bench/cpu_wrap.py adds), and each row's ratio to the best peer's figure."""

import json
import statistics
import sys

OURS = "studio-worker"
rows = {}
latency = {}
for line in open(sys.argv[1]):
    rec = json.loads(line)
    r = rec.get("r")
    if not r:
        continue
    key = (rec["system"], rec["variant"])
    if r.get("phase") == "throughput":
        rows.setdefault(key + (r["concurrency"],), []).append(r)
    elif r.get("phase") == "latency":
        latency.setdefault(key, []).append(r)


def med(rs, field):
    vals = [r[field] for r in rs if isinstance(r.get(field), (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


print("# Throughput and CPU per 1,000 jobs (medians of each row's runs)\n")
print("CPU: driver process tree and PostgreSQL cluster, whole driver run (set-up, enqueue and")
print("processing), from /proc.\n")
for c in sorted({k[2] for k in rows}):
    best = max(
        (med(rs, "process_jobs_per_s") or 0 for k, rs in rows.items() if k[2] == c and k[0] != OURS),
        default=0,
    )
    best_cpu = min(
        (
            (med(rs, "cpu_driver_s_per_1000") or 0) + (med(rs, "cpu_pg_s_per_1000") or 0)
            for k, rs in rows.items()
            if k[2] == c and k[0] != OURS and med(rs, "cpu_pg_s_per_1000") is not None
        ),
        default=None,
    )
    print(f"## c = {c}\n")
    print("| system | variant | runs | jobs/s | × best peer | enqueue jobs/s | driver CPU s | PostgreSQL CPU s | total CPU s | × least peer CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, rs in sorted(rows.items(), key=lambda kv: -(med(kv[1], "process_jobs_per_s") or 0)):
        if k[2] != c:
            continue
        jobs = med(rs, "process_jobs_per_s")
        drv, pg = med(rs, "cpu_driver_s_per_1000"), med(rs, "cpu_pg_s_per_1000")
        total = None if drv is None or pg is None else drv + pg
        print(
            f"| {k[0]} | {k[1]} | {len(rs)} | {fmt(jobs, ',.0f')} | "
            f"{fmt(jobs / best if jobs and best else None, '.2f')} | "
            f"{fmt(med(rs, 'enqueue_jobs_per_s'), ',.0f')} | {fmt(drv, '.3f')} | {fmt(pg, '.3f')} | "
            f"{fmt(total, '.3f')} | {fmt(total / best_cpu if total and best_cpu else None, '.2f')} |"
        )
    print()
print("## Latency (idle worker, enqueue → handler start)\n")
print("| system | variant | runs | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|")
for k, rs in sorted(latency.items(), key=lambda kv: med(kv[1], "p50_ms") or 1e9):
    print(f"| {k[0]} | {k[1]} | {len(rs)} | {fmt(med(rs, 'p50_ms'), '.2f')} | {fmt(med(rs, 'p99_ms'), '.2f')} | {fmt(med(rs, 'max_ms'), '.2f')} |")
