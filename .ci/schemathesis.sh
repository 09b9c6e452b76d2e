#!/usr/bin/env bash
# Holds a live chatd to its OpenAPI document: starts the given release
# binary on a free loopback port with fresh directories and rate limits
# off, seeds users, rooms and messages, then lets schemathesis (pinned, in
# a throwaway venv) send generated requests to every documented operation.
# Fails on any 5xx and on any status, content type, header or body that the
# document does not describe.
#
#   .ci/schemathesis.sh target/release/chatd
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
# Generated test cases per operation and phase; the whole run stays within
# a few minutes on two cores. A fixed seed makes a failure reproducible;
# SCHEMATHESIS_SEED=random (or a number) explores further.
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
SEED="${SCHEMATHESIS_SEED:-14}"
# No 5xx; every status, content type, documented header and body as the
# document says; and a method the document does not list for a path is 405
# with an `Allow` naming exactly the documented ones.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance
CHECKS=$CHECKS,response_schema_conformance,unsupported_method,allow_header_conformance

bin="$(cd "$(dirname "${1:?usage: $0 path/to/chatd}")" && pwd)/$(basename "$1")"
repo="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
echo "schemathesis $SCHEMATHESIS_VERSION: installing into a venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"

# The web client is copied: stored attachments land under the static dir.
cp -r "$repo/static" "$work/static"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
CHAT_ADDR="127.0.0.1:$port" CHAT_DATA_DIR="$work/data" CHAT_STATIC_DIR="$work/static" BASE_URL="$base" \
  CHAT_RATE_LIMITS=off CHAT_DB_SYNC=normal RUST_LOG=warn \
  "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "chatd did not start" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null

token="$(python3 "$repo/.ci/schemathesis-seed.py" "$base")"
seed_args=()
[ "$SEED" = random ] || seed_args=(--seed "$SEED")

run() {
  (cd "$work" && SCHEMATHESIS_HOOKS="$repo/.ci/schemathesis-hooks.py" "$work/venv/bin/schemathesis" run "$base/openapi.json" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    "${seed_args[@]}" \
    --workers 2 \
    --request-timeout 30 \
    --generation-database none \
    --suppress-health-check all \
    --no-color \
    -H "Authorization: Bearer $token" \
    "$@")
}

status=0
# Everything but the two operations that end the token, then those two
# (a wrong current password is all the generator can give, so the token
# survives the first; logout ends it last).
run --exclude-path /api/auth/password --exclude-path /api/auth/logout || status=1
run --include-path /api/auth/password --phases examples,coverage,fuzzing || status=1
run --include-path /api/auth/logout --phases examples,coverage,fuzzing || status=1

if grep -qE 'panicked|ERROR' "$work/server.log"; then
  echo "chatd logged errors:" >&2
  grep -E 'panicked|ERROR' "$work/server.log" | head -50 >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 100 lines) ---" >&2
  tail -n 100 "$work/server.log" >&2
fi
echo "schemathesis: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - started)) s"
exit "$status"
