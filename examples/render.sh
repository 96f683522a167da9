#!/bin/sh
# Demo job program for the `command` executor: reads the job's input JSON on stdin, reports
# progress, and prints a JSON result. `{"frames": N}` renders N fake frames; `{"fail": true}`
# exits with status 65 (permanent failure).
input=$(cat)
case "$input" in *'"fail": true'*|*'"fail":true'*) echo "refusing input: fail requested" >&2; exit 65;; esac
frames=$(printf '%s' "$input" | sed -n 's/.*"frames"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
frames=${frames:-3}
i=1
while [ "$i" -le "$frames" ]; do
  sleep 0.2
  echo "@progress $((i * 100 / frames)) rendered frame $i of $frames"
  i=$((i + 1))
done
printf '{"job": "%s", "frames": %s, "url": "file:///tmp/%s.png"}\n' "$STUDIO_JOB_ID" "$frames" "$STUDIO_JOB_ID"
