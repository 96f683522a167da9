#!/usr/bin/env bash
# The quick start without Docker, in one command: against a local PostgreSQL (DATABASE_URL, a
# superuser; default postgres://postgres@127.0.0.1:5432/postgres), apply the migrations, create
# the worker's login role and a demo user, run the worker with config/example.toml, enqueue three
# render jobs (one of them bad) and show them moving. The worker is stopped (drained) at the end.
#
#   scripts/demo.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DEMO_USER=00000000-0000-4000-8000-000000000001

command -v psql >/dev/null || { echo "demo.sh: psql is needed (apt-get install postgresql-client)" >&2; exit 1; }
psql "$ADMIN_URL" -qAtX -c 'select 1' >/dev/null ||
  { echo "demo.sh: no PostgreSQL answers at DATABASE_URL (a superuser URL is needed)" >&2; exit 1; }

cargo build --release --locked
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/studio-worker

echo "== migrate (as the schema owner)"
DATABASE_URL=$ADMIN_URL "$BIN" migrate

echo "== the worker's login role (member of studio_worker) and a demo user"
psql "$ADMIN_URL" -qX -v ON_ERROR_STOP=1 <<SQL
do \$\$ begin
  if not exists (select from pg_roles where rolname = 'studio_worker_demo') then
    create role studio_worker_demo login password 'demo' in role studio_worker;
  end if;
end \$\$;
insert into auth.users (id, email) values ('$DEMO_USER', 'demo@example.test') on conflict do nothing;
SQL
# Same server and database, the worker's role instead of the superuser.
WORKER_URL=$(printf '%s' "$ADMIN_URL" | sed -E 's#^(postgres(ql)?://)[^@/]*@#\1#; s#^(postgres(ql)?://)#\1studio_worker_demo:demo@#')
export DATABASE_URL=$WORKER_URL

echo "== start the worker (config/example.toml: kind 'render' runs examples/render.sh)"
"$BIN" --config config/example.toml run &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
sleep 1

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
echo "== stopping the worker (SIGTERM drains it)"
