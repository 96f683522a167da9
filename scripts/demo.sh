#!/usr/bin/env bash
# The quick start without Docker, in one command: against a local PostgreSQL (DATABASE_URL, a
# superuser; default postgres://postgres@127.0.0.1:5432/postgres), apply the migrations, create
# the worker's and the API's login roles (with random passwords) and a demo user, run the worker
# with config/example.toml, enqueue three render jobs (one of them bad) and show them moving.
# The worker is stopped (drained) at the end.
#
#   scripts/demo.sh           # run the demo (builds the release binary first: minutes, once)
#   scripts/demo.sh --clean   # remove what it created: the demo user (and its jobs), the roles
#
# What it creates is named after DEMO_NAME (default: your login name), so people sharing a
# server do not collide: roles studio_worker_demo_<name> and studio_api_demo_<name>, and a demo
# user whose id is derived from the name. It refuses to start when those roles exist (a demo
# still running, or not cleaned up), and --clean removes only its own.
# STUDIO_WORKER_BIN runs that binary instead of building the release one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DEMO_NAME=${DEMO_NAME:-$(id -un 2>/dev/null || echo demo)}
NAME=$(printf '%s' "$DEMO_NAME" | tr -c 'a-zA-Z0-9_\n' '_' | tr 'A-Z' 'a-z' | cut -c1-40)
[[ -n $NAME ]] || { echo "demo.sh: DEMO_NAME must contain a letter or digit" >&2; exit 2; }
HASH=$(printf '%s' "demo:$NAME" | md5sum | cut -c1-32)
DEMO_USER=${HASH:0:8}-${HASH:8:4}-4${HASH:13:3}-8${HASH:17:3}-${HASH:20:12}
DEMO_ROLE=studio_worker_demo_$NAME
API_ROLE=studio_api_demo_$NAME
API_PORT=${DEMO_API_PORT:-8080}

command -v psql >/dev/null || { echo "demo.sh: psql is needed (apt-get install postgresql-client)" >&2; exit 1; }
psql "$ADMIN_URL" -qAtX -c 'select 1' >/dev/null ||
  { echo "demo.sh: no PostgreSQL answers at DATABASE_URL (a superuser URL is needed)" >&2; exit 1; }

if [[ ${1:-} == --clean ]]; then
  # Deleting the user deletes its jobs (foreign key) and their history (trigger).
  psql "$ADMIN_URL" -qX -v ON_ERROR_STOP=1 <<SQL
do \$\$ begin
  if to_regclass('auth.users') is not null then
    delete from auth.users where id = '$DEMO_USER';
  end if;
end \$\$;
drop role if exists $DEMO_ROLE;
drop role if exists $API_ROLE;
SQL
  echo "demo.sh: removed the demo user $DEMO_USER (with its jobs) and the login roles $DEMO_ROLE, $API_ROLE (DEMO_NAME=$NAME)"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/demo.sh [--clean]" >&2
  exit 2
fi

existing=$(psql "$ADMIN_URL" -qAtX -v role="$DEMO_ROLE" -v api_role="$API_ROLE" <<'SQL'
select string_agg(rolname, ', ') from pg_roles where rolname in (:'role', :'api_role');
SQL
)
if [[ -n $existing ]]; then
  echo "demo.sh: the role(s) $existing already exist: a demo named \"$NAME\" is running or was not" \
       "cleaned up. Run \`DEMO_NAME=$NAME scripts/demo.sh --clean\` first, or pick another DEMO_NAME." >&2
  exit 1
fi

if [[ -n ${STUDIO_WORKER_BIN:-} ]]; then
  BIN=$STUDIO_WORKER_BIN
else
  echo "== build the release binary (cargo build --release: several minutes the first time;" \
       "STUDIO_WORKER_BIN=<path> uses one already built)"
  cargo build --release --locked
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/studio-worker
fi
echo "== demo \"$NAME\": roles $DEMO_ROLE and $API_ROLE, demo user $DEMO_USER"

echo "== migrate (as the schema owner)"
DATABASE_URL=$ADMIN_URL "$BIN" migrate

echo "== login roles for the worker (in studio_worker) and the job API (in studio_api), random passwords; a demo user"
PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
API_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
psql "$ADMIN_URL" -qX -v ON_ERROR_STOP=1 -v role="$DEMO_ROLE" -v pw="$PASSWORD" \
  -v api_role="$API_ROLE" -v api_pw="$API_PASSWORD" <<SQL
select format('create role %I login in role studio_worker', :'role')
 where not exists (select from pg_roles where rolname = :'role') \gexec
select format('alter role %I password %L', :'role', :'pw') \gexec
select format('create role %I login in role studio_api', :'api_role')
 where not exists (select from pg_roles where rolname = :'api_role') \gexec
select format('alter role %I password %L', :'api_role', :'api_pw') \gexec
insert into auth.users (id, email) values ('$DEMO_USER', 'demo+$NAME@example.test') on conflict do nothing;
SQL
# Same server and database, the worker's role instead of the superuser; the password travels
# in STUDIO_DATABASE__PASSWORD (no URL-encoding, not on the command line).
WORKER_URL=$(printf '%s' "$ADMIN_URL" | sed -E "s#^(postgres(ql)?://)[^@/]*@#\\1#; s#^(postgres(ql)?://)#\\1$DEMO_ROLE@#")
export DATABASE_URL=$WORKER_URL
export STUDIO_DATABASE__PASSWORD=$PASSWORD
# The job API, served by the same process: its own role, and tokens signed with this secret
# (on Supabase: the project's JWT secret or its JWKS URL).
export STUDIO_API__LISTEN=127.0.0.1:$API_PORT
export STUDIO_API__JWT_SECRET=$JWT_SECRET
export STUDIO_API__DATABASE_URL=$(printf '%s' "$ADMIN_URL" |
  sed -E "s#^(postgres(ql)?://)[^@/]*@#\\1#; s#^(postgres(ql)?://)#\\1$API_ROLE:$API_PASSWORD@#")

echo "== start the worker (config/example.toml: kind 'render' runs examples/render.sh)"
LOG=$(mktemp)
"$BIN" --config config/example.toml run >"$LOG" 2>&1 &
WORKER=$!
TAIL=
cleanup() {
  kill -TERM "$WORKER" 2>/dev/null && wait "$WORKER" 2>/dev/null || true
  [[ -n $TAIL ]] && kill "$TAIL" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT
for _ in $(seq 1 150); do
  grep -q "worker started" "$LOG" && break
  kill -0 "$WORKER" 2>/dev/null || break
  sleep 0.2
done
if ! grep -q "worker started" "$LOG"; then
  echo "demo.sh: the worker did not start; its output:" >&2
  sed 's/^/  /' "$LOG" >&2
  echo "demo.sh: nothing was enqueued. Fix the cause above (e.g. another process on the" \
       "operations port: set STUDIO_HTTP__LISTEN=127.0.0.1:<free port>) and run it again." >&2
  exit 1
fi
tail -n +1 -f "$LOG" &
TAIL=$!

echo "== enqueue three jobs"
"$BIN" enqueue --user "$DEMO_USER" --kind render --input '{"frames": 5}'
"$BIN" enqueue --user "$DEMO_USER" --kind render --input '{"frames": 10}'
BAD=$("$BIN" enqueue --user "$DEMO_USER" --kind render --input '{"fail": true}')

for _ in 1 2 3 4; do
  sleep 1
  "$BIN" jobs list --user "$DEMO_USER" --limit 3
done
echo "== the failed job and its history"
"$BIN" jobs show "$BAD"
"$BIN" stats

if command -v curl >/dev/null && command -v python3 >/dev/null; then
  echo "== the job API: the demo user creates a job with their own token and follows it live"
  echo "\$ TOKEN=\$(studio-worker token --user $DEMO_USER --expires 10m)   # signed with api.jwt_secret"
  TOKEN=$("$BIN" token --user "$DEMO_USER" --expires 10m)
  echo "\$ curl -X POST http://127.0.0.1:$API_PORT/v1/jobs -H 'Authorization: Bearer …' -d '{\"kind\": \"render\", \"input\": {\"frames\": 3}}'"
  CREATED=$(curl -sS -X POST "http://127.0.0.1:$API_PORT/v1/jobs" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"kind": "render", "input": {"frames": 3}}')
  echo "$CREATED"
  JOB=$(printf '%s' "$CREATED" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  echo "\$ curl -N http://127.0.0.1:$API_PORT/v1/jobs/$JOB/events -H 'Authorization: Bearer …'"
  curl -sS -N --max-time 30 "http://127.0.0.1:$API_PORT/v1/jobs/$JOB/events" \
    -H "Authorization: Bearer $TOKEN" || true
else
  echo "== (curl and python3 are needed to show the job API; skipped)"
fi
echo "== stopping the worker (SIGTERM drains it)"
echo "== clean up with: DEMO_NAME=$NAME scripts/demo.sh --clean (removes the demo user, its jobs and the roles $DEMO_ROLE, $API_ROLE)"
