#!/usr/bin/env bash
# What the cluster tests (tests/cluster) need besides Rust: a PostgreSQL
# server (initdb, postgres, pg_isready, createdb, psql) and nats-server,
# both from Debian, and the unprivileged user `chatd-ci` that runs PostgreSQL
# when the tests run as root (postgres refuses to run as root).
#
# Idempotent: when everything is present it only prints the versions, so it
# is cheap to call before every run. Installs through sudo when not root.
set -euo pipefail

say() { printf 'cluster-deps: %s\n' "$*"; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    say "need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

# The PostgreSQL server's bin directory, found the way tests/cluster does:
# `pg_config --bindir` when it holds a server, else the newest
# /usr/lib/postgresql/*/bin. Prints nothing when there is no server.
pg_bindir() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$dir" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return
    fi
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/postgres" ]; then
      echo "$dir"
      return
    fi
  done
}

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
[ -n "$(pg_bindir)" ] || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Only needed as root: the tests then run PostgreSQL as this user.
if [ "$(id -u)" -eq 0 ] && ! id -u chatd-ci >/dev/null 2>&1; then
  say "creating the system user chatd-ci (runs PostgreSQL in the tests)"
  useradd --system --no-create-home --shell /usr/sbin/nologin chatd-ci
fi

bindir="$(pg_bindir)"
if [ -z "$bindir" ]; then
  say "no PostgreSQL server found after installing postgresql" >&2
  exit 1
fi
say "$("$bindir/postgres" --version) in $bindir"
say "$(nats-server --version 2>&1 | head -n 1)"
