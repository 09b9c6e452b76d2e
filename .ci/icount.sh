#!/usr/bin/env bash
# Instruction counts of the hot paths (issue 15): a guard that does not
# depend on how busy the machine is. Runs each path of benches/icount.rs
# under callgrind twice, WARMUP and WARMUP + ITERATIONS times, and takes
# the difference over ITERATIONS: instructions per iteration, with process
# start, setup and first-call effects cancelled out. Compares them with
# benches/icount.baseline and fails when one grew by more than TOLERANCE_PCT.
#
# The baseline is read from the work tree, so from the commit under test: a
# commit that makes a path slower on purpose updates the file in that same
# commit (`.ci/icount.sh --update`), and CI then compares with the new one.
#
# Counts depend on the binary, so on rustc, Cargo.lock and valgrind (and,
# slightly, glibc's malloc): a toolchain update may need an --update too;
# the baseline's header names the versions it was taken with.
#
#   .ci/icount.sh            check against the baseline
#   .ci/icount.sh --update   rewrite the baseline with the current counts
set -euo pipefail
cd "$(dirname "$0")/.."

BASELINE=benches/icount.baseline
WARMUP=10
ITERATIONS=1000
TOLERANCE_PCT=5

update=false
case "${1:-}" in
  "") ;;
  --update) update=true ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
  else
    echo "icount: valgrind is not installed (Debian package 'valgrind')" >&2
    exit 1
  fi
fi

# Builds the icount bench alone, with the release profile (the bench
# profile inherits it unchanged, so the code is what `cargo bench` runs),
# which lets CI's later `cargo build --release` reuse the dependencies;
# its path comes from cargo's JSON.
bin="$(cargo build --release --locked --bench icount --message-format=json \
  | grep '"name":"icount"' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -n 1)"
if [ ! -x "$bin" ]; then
  echo "icount: cargo built no icount bench binary" >&2
  exit 1
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Instructions of one run: callgrind's total for the whole process.
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$bin" "$1" "$2" >/dev/null 2>"$out/valgrind.log" || {
    cat "$out/valgrind.log" >&2
    echo "icount: $1 failed under valgrind" >&2
    exit 1
  }
  sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out/callgrind.out"
}

versions="$(rustc --version | cut -d' ' -f1-2), $(valgrind --version)"
declare -A measured
names=()
while IFS=$'\t' read -r name _; do
  names+=("$name")
  small="$(instructions "$name" "$WARMUP")"
  large="$(instructions "$name" "$((WARMUP + ITERATIONS))")"
  measured[$name]=$(( (large - small + ITERATIONS / 2) / ITERATIONS ))
done < <("$bin" --list)

if $update; then
  {
    echo "# Instructions per iteration of each hot path in benches/icount.rs,"
    echo "# measured by .ci/icount.sh under callgrind; CI fails when one grows"
    echo "# by more than ${TOLERANCE_PCT}%. Rewrite with: .ci/icount.sh --update"
    echo "# Taken with: $versions"
    for name in "${names[@]}"; do
      printf '%-24s %s\n' "$name" "${measured[$name]}"
    done
  } > "$BASELINE"
  echo "icount: wrote $BASELINE"
  cat "$BASELINE"
  exit 0
fi

if [ ! -f "$BASELINE" ]; then
  echo "icount: no $BASELINE; write it with $0 --update" >&2
  exit 1
fi

declare -A expected
while read -r name count _; do
  case "$name" in ''|'#'*) continue ;; esac
  expected[$name]="$count"
done < "$BASELINE"

failed=0
printf '%-24s %12s %12s %8s\n' path baseline now change
for name in "${names[@]}"; do
  now="${measured[$name]}"
  base="${expected[$name]:-}"
  if [ -z "$base" ]; then
    printf '%-24s %12s %12s %8s  NEW: not in %s\n' "$name" - "$now" - "$BASELINE"
    failed=1
    continue
  fi
  change="$(awk -v n="$now" -v b="$base" 'BEGIN { printf "%+.2f%%", (n - b) * 100 / b }')"
  verdict=""
  if [ $(( now * 100 )) -gt $(( base * (100 + TOLERANCE_PCT) )) ]; then
    verdict="  FAIL: more than ${TOLERANCE_PCT}% over the baseline"
    failed=1
  elif [ $(( now * 100 )) -lt $(( base * (100 - TOLERANCE_PCT) )) ]; then
    verdict="  faster: --update to keep the gain"
  fi
  printf '%-24s %12s %12s %8s%s\n' "$name" "$base" "$now" "$change" "$verdict"
  unset "expected[$name]"
done
for name in "${!expected[@]}"; do
  printf '%-24s %12s %12s %8s  GONE: no such path in benches/icount.rs\n' "$name" "${expected[$name]}" - -
  failed=1
done

if [ "$failed" != 0 ]; then
  echo "icount: counts changed beyond ${TOLERANCE_PCT}% (now: $versions;"
  echo "  baseline: $(sed -n 's/^# Taken with: //p' "$BASELINE")). If that is intended,"
  echo "  run .ci/icount.sh --update and commit $BASELINE with the change."
  exit 1
fi
echo "icount: ${#names[@]} paths within ${TOLERANCE_PCT}% of $BASELINE"
