#!/usr/bin/env bash
# Prove that the running job API conforms to its own OpenAPI document.
#
# Usage: scripts/api-conformance.sh BASE_URL
#   env CONFORMANCE_TOKEN          a valid user access token
#       CONFORMANCE_SERVICE_TOKEN  a valid service token, and CONFORMANCE_USER the user it acts for
#       CONFORMANCE_SEED           schemathesis seed (default fixed, so a run is repeatable)
#       CONFORMANCE_EXAMPLES       fuzzed test cases per operation with the user's token
#                                  (default 20; half that with the service token, a quarter
#                                  with an invalid one)
#       STUDIO_PYTHON              the Python to use (default: target/py-conformance's, else python3)
#
# 1. openapi-spec-validator validates /v1/openapi.json;
# 2. schemathesis fuzzes every operation with a valid user token, a service token and an
#    invalid token: no 5xx, no status, content type, header or body the document does not
#    describe, no request that hangs (10 s per request).
# tests/api/conformance.rs starts the API and runs this; .ci/run installs the tools (pinned).
# Exit 77 when no Python with the tools is found (the test then says it was skipped).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${1:?usage: $0 BASE_URL}"
SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
say() { echo "api-conformance: $*" >&2; }

PY="${STUDIO_PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in "${CARGO_TARGET_DIR:-$ROOT/target}/py-conformance/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import schemathesis, openapi_spec_validator' >/dev/null 2>&1; then
      PY="$candidate"
      break
    fi
  done
fi
if [[ -z "$PY" ]] || ! "$PY" -c 'import schemathesis, openapi_spec_validator' >/dev/null 2>&1; then
  say "no Python with schemathesis and openapi-spec-validator; install them with
  python3 -m venv target/py-conformance && target/py-conformance/bin/pip install schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$VALIDATOR_VERSION
(.ci/run does this)"
  exit 77
fi
BIN="$(dirname "$PY")"
SCHEMATHESIS=("$PY" -m schemathesis.cli)
[[ -x "$BIN/schemathesis" ]] && SCHEMATHESIS=("$BIN/schemathesis")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/api-conformance.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$BASE/v1/openapi.json" "$WORK/openapi.json" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
say "validating the document"
"$PY" -m openapi_spec_validator "$WORK/openapi.json"

# One worker: hypothesis parses sources with `ast` and CPython 3.11 fails on that from two threads
# ("AST constructor recursion depth mismatch").
run() {  # $1 = what, the rest = extra schemathesis arguments
  local what="$1"; shift
  say "fuzzing every operation with $what"
  local exclude=()
  [[ -n "${EXCLUDED_CHECKS:-}" ]] && exclude=(--exclude-checks "$EXCLUDED_CHECKS")
  timeout 300 "${SCHEMATHESIS[@]}" --config-file "$ROOT/scripts/api-conformance.toml" \
    run "$WORK/openapi.json" --url "$BASE" \
    --checks all "${exclude[@]}" \
    --phases examples,coverage,fuzzing \
    --max-examples "${EXAMPLES:?}" --seed "${CONFORMANCE_SEED:-20261206}" \
    --request-timeout 10 --workers 1 --no-shrink \
    --suppress-health-check all --warnings off \
    "$@" </dev/null
}

EXAMPLES="${CONFORMANCE_EXAMPLES:-20}"
EXCLUDED_CHECKS="" run "a user's token" -H "Authorization: Bearer ${CONFORMANCE_TOKEN:?}"
EXAMPLES=$(( (EXAMPLES + 1) / 2 )) EXCLUDED_CHECKS="" run "a service token" -H "Authorization: Bearer ${CONFORMANCE_SERVICE_TOKEN:?}" \
  -H "X-On-Behalf-Of: ${CONFORMANCE_USER:?}"
# an invalid token: everything must be a documented 401 (or a documented 400/404 first)
EXAMPLES=$(( (EXAMPLES + 3) / 4 )) EXCLUDED_CHECKS="positive_data_acceptance,ignored_auth" \
  run "an invalid token" \
  -H "Authorization: Bearer invalid.token.value"
say "the API conforms to its document"
