#!/usr/bin/env bash
# Run the studio-worker test suite against PostgreSQL.
#
# Usage: scripts/test.sh [extra cargo test args]
#   e.g. scripts/test.sh -- --nocapture
#
# The #[sqlx::test] tests need DATABASE_URL to point at a role that may
# CREATE DATABASE. DATABASE_URL defaults to
# postgres://postgres@127.0.0.1:5432/postgres. If no server answers there, a
# throwaway cluster is started from the local PostgreSQL binaries (initdb /
# pg_ctl from PATH or /usr/lib/postgresql/<ver>/bin) on a free port from 55433
# up, and is stopped and deleted when the script exits.
# CARGO_TARGET_DIR is honoured if set.
#
# Development aid: STUDIO_TEST_CMD replaces the test command (default
# "cargo test --locked --all-targets"); it is eval'd with the script's args
# appended, e.g.  STUDIO_TEST_CMD='psql "$DATABASE_URL" -c "select 1"' scripts/test.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"
STUDIO_TEST_CMD="${STUDIO_TEST_CMD:-cargo test --locked --all-targets}"

say() { echo "test.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
redact() { sed -E 's#^([a-z]+://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }
have() { local p; p="$(command -v "$1")" && [[ -x "$p" ]]; }

server_answers() {  # $1 = connection URL
  if have pg_isready; then pg_isready -q -t 3 -d "$1" 2>/dev/null
  elif have psql; then psql "$1" -qAtX -c 'select 1' >/dev/null 2>&1
  else return 1; fi
}

check_can_create_db() {
  have psql || { say "warning: psql not found, cannot verify that the role may CREATE DATABASE"; return 0; }
  local out
  out="$(psql "$DATABASE_URL" -qAtX -c \
    'select rolsuper or rolcreatedb from pg_roles where rolname = current_user' 2>&1)" ||
    die "a server answers at $(redact "$DATABASE_URL") but psql could not query it: $out"
  [[ "$out" == t ]] ||
    die "the role in $(redact "$DATABASE_URL") cannot create databases (needs SUPERUSER or CREATEDB, which #[sqlx::test] requires); run 'ALTER ROLE <role> CREATEDB' or point DATABASE_URL at another role"
}

find_pg_bindir() {  # prints the directory holding initdb and pg_ctl
  local d
  if have initdb && have pg_ctl; then dirname "$(command -v initdb)"; return 0; fi
  while read -r d; do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_pg() {  # run a command as the cluster owner (initdb refuses to run as root)
  if [[ $EUID -ne 0 ]]; then "$@"
  elif have runuser; then runuser -u postgres -- "$@"
  else su -s /bin/sh postgres -c "$(printf '%q ' "$@")"; fi
}

TMP_DIR="" BIN=""
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [[ -n "$TMP_DIR" && -f "$TMP_DIR/data/postmaster.pid" ]]; then
    (cd "$TMP_DIR" && as_pg "$BIN/pg_ctl" -D "$TMP_DIR/data" -m immediate stop >/dev/null 2>&1) ||
      say "warning: could not stop the throwaway cluster in $TMP_DIR"
  fi
  [[ -n "$TMP_DIR" ]] && rm -rf "$TMP_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_throwaway_cluster() {
  BIN="$(find_pg_bindir)" || die "no server answers at $(redact "$DATABASE_URL") and no PostgreSQL server binaries (initdb, pg_ctl) were found in PATH or /usr/lib/postgresql/*/bin.
  Fix: install them (e.g. 'apt-get install postgresql-15'), or set DATABASE_URL to a running server whose role may CREATE DATABASE."
  if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    say "creating system user 'postgres' to own the throwaway cluster"
    useradd --system --user-group --no-create-home --shell /bin/sh postgres
  fi
  local port=55433
  while port_in_use "$port"; do
    (( ++port <= 55533 )) || die "no free port found in 55433-55533"
  done
  TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/studio-worker-pg.XXXXXX")"
  [[ $EUID -eq 0 ]] && chown postgres: "$TMP_DIR"
  cd "$TMP_DIR"  # the postgres user may not be able to read the caller's cwd
  as_pg "$BIN/initdb" -D "$TMP_DIR/data" -A trust -U postgres --no-sync -E UTF8 --locale=C \
    >"$TMP_DIR/initdb.log" 2>&1 || { cat "$TMP_DIR/initdb.log" >&2; die "initdb failed"; }
  as_pg "$BIN/pg_ctl" -D "$TMP_DIR/data" -l "$TMP_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $TMP_DIR -c fsync=off -c wal_level=logical -c max_connections=200" \
    >/dev/null || { tail -n 30 "$TMP_DIR/server.log" >&2 || true; die "pg_ctl start failed"; }
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  say "using throwaway PostgreSQL cluster ($BIN) at $DATABASE_URL"
}

if server_answers "$DATABASE_URL"; then
  check_can_create_db
  say "using existing PostgreSQL server at $(redact "$DATABASE_URL")"
else
  say "no server answers at $(redact "$DATABASE_URL"); starting a throwaway cluster"
  start_throwaway_cluster
fi

cd "$ROOT"
status=0
eval "$STUDIO_TEST_CMD" '"$@"' || status=$?

# The Kubernetes manifests, offline: Kubernetes' schemas (kubernetes-validate, from PyPI, which
# bundles them) and KEDA's documented trigger fields (scripts/check-kubernetes.py). CI installs
# kubernetes-validate and sets STUDIO_REQUIRE_KUBERNETES_VALIDATE=1; elsewhere a missing tool is
# a warning, so the suite still runs on a fresh machine.
if [[ "${STUDIO_REQUIRE_KUBERNETES_VALIDATE:-0}" != 1 ]]; then
  if ! python3 -c 'import yaml, tomllib' >/dev/null 2>&1; then
    say "warning: python3 with PyYAML not found: deploy/kubernetes NOT checked (pip install kubernetes-validate)"
    exit "$status"
  fi
  if ! have kubernetes-validate; then
    say "warning: kubernetes-validate not found: deploy/kubernetes checked without Kubernetes' schemas (pip install kubernetes-validate)"
    export STUDIO_SKIP_KUBERNETES_VALIDATE=1
  fi
fi
python3 scripts/check-kubernetes.py deploy/kubernetes || status=$?
exit "$status"
