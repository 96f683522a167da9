#!/usr/bin/env python3
"""Run one benchmark driver and add CPU per 1,000 jobs to its RESULT line.

    cpu_wrap.py <pgdata> <command> [args...]

Measures, from /proc, the CPU seconds of the driver (every process it started and waited for:
node, python or our binary) and of the PostgreSQL cluster whose data directory is <pgdata>
(the postmaster, its live children and the children it reaped), over the whole run of the
driver: schema set-up, enqueue and processing alike, for every system the same way. The
cluster must be private to the benchmark (every database's work counts).

The driver's output is passed through; its `RESULT {json}` line gets `cpu_driver_s`,
`cpu_pg_s` and, for a throughput phase, `cpu_driver_s_per_1000` and `cpu_pg_s_per_1000`.
"""

import json
import os
import resource
import subprocess
import sys

TICKS = os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(ppid, own ticks, reaped children's ticks) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cluster_cpu(pgdata):
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    except (OSError, ValueError):
        return None
    own = stat(postmaster)
    if own is None:
        return None
    ticks = own[1] + own[2]
    for name in os.listdir("/proc"):
        if name.isdigit():
            child = stat(name)
            if child is not None and child[0] == postmaster:
                ticks += child[1]
    return ticks / TICKS


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    pgdata, command = sys.argv[1], sys.argv[2:]
    pg_before, driver_before = cluster_cpu(pgdata), children_cpu()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    pg_after, driver_after = cluster_cpu(pgdata), children_cpu()
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["cpu_driver_s"] = round(driver_after - driver_before, 3)
            if pg_before is not None and pg_after is not None:
                result["cpu_pg_s"] = round(pg_after - pg_before, 3)
            n = result.get("n") if result.get("phase") == "throughput" else None
            if n:
                result["cpu_driver_s_per_1000"] = round(result["cpu_driver_s"] / n * 1000, 4)
                if "cpu_pg_s" in result:
                    result["cpu_pg_s_per_1000"] = round(result["cpu_pg_s"] / n * 1000, 4)
            line = "RESULT " + json.dumps(result)
        print(line)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
