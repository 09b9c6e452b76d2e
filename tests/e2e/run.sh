#!/usr/bin/env bash
# Browser tests of the web client against the real chatd release binary
# (built before, e.g. by CI: cargo build --release). Uses Debian's Chromium.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

npm ci --no-audit --no-fund
node --test
