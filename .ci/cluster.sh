#!/usr/bin/env bash
# The cluster tests (tests/cluster): chatd processes sharing a real
# PostgreSQL and a real NATS. Installs what they need first (quick when it
# is there), then runs them; they are #[ignore]d in a plain `cargo test`.
# Then, against one private PostgreSQL (and NATS) started here: the store's
# own PostgreSQL tests, and the integration suite against one node of a
# three-node cluster (each test server starts two more nodes on its database).
#
# Two test threads: each test may start its own PostgreSQL and chatd
# processes, and CI machines are small. Extra arguments go to the cluster
# test harness (e.g. a test name filter, or --nocapture for start-up timings).
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/cluster-deps.sh
cargo test --locked --test cluster -- --ignored --test-threads=2 "$@"

# A private PostgreSQL and NATS on free loopback ports, removed on exit.
bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir="$(mktemp -d)"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown chatd-ci "$dir"
  as_pg=(runuser -u chatd-ci --)
fi
pg_port="$(free_port)"
nats_port="$(free_port)"
cleanup() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${nats_pid:-}" ] && kill "$nats_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${as_pg[@]}" "$bindir/initdb" -A trust -U chatd -E UTF8 --locale=C --no-sync -D "$dir/data" >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
  -o "-h 127.0.0.1 -p $pg_port -k $dir -c fsync=off -c max_connections=500" start >/dev/null
nats-server -a 127.0.0.1 -p "$nats_port" >"$dir/nats.log" 2>&1 &
nats_pid=$!
export CHATD_IT_POSTGRES="postgres://chatd@127.0.0.1:$pg_port/postgres"
export CHATD_IT_NATS="nats://127.0.0.1:$nats_port"

echo "store tests on PostgreSQL ($CHATD_IT_POSTGRES)"
cargo test --locked --lib -- --ignored store::pg
echo "integration suite on a node of a three-node cluster (PostgreSQL store, NATS)"
export CHATD_IT_NODES=3
# What is not on PostgreSQL yet, or checks SQLite's own files (see README).
cargo test --locked --test it -- $(sed -e 's/#.*//' -e '/^ *$/d' -e 's/^/--skip /' .ci/it-not-on-postgres.txt)
