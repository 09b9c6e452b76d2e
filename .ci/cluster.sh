#!/usr/bin/env bash
# The cluster tests (tests/cluster): chatd processes sharing a real
# PostgreSQL and a real NATS. Installs what they need first (quick when it
# is there), then runs them; they are #[ignore]d in a plain `cargo test`.
#
# Two test threads: each test may start its own PostgreSQL and chatd
# processes, and CI machines are small. Extra arguments go to the test
# harness (e.g. a test name filter, or --nocapture for start-up timings).
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/cluster-deps.sh
cargo test --locked --test cluster -- --ignored --test-threads=2 "$@"
