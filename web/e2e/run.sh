#!/usr/bin/env bash
# The web console's end-to-end tests: Debian's chromium driven by
# playwright-core (web/e2e/console.test.mjs) against a whole local Warren
# (tests/warren-up.sh: `warren up` on private ports, torn down on exit).
# Needs root, web/node_modules (`npm ci`) and the console built into
# warren-control (`make test-console` does both).
#
#   web/e2e/run.sh [node --test args]
#
# Env: CARGO_TARGET_DIR, PROFILE (debug or release), CHROMIUM (default
# /usr/bin/chromium), CONSOLE_SCREENSHOTS (a directory for screenshots).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    echo "no chromium at $CHROMIUM: scripts/deps.sh installs Debian's" >&2
    exit 1
fi

profile=${PROFILE:-debug}
flag=$([ "$profile" = release ] && echo --release || true)
# The whole workspace's binaries: warren, warren-control, the agent, envd.
cargo build -q $flag --workspace --bins
bin=$target/$profile

source tests/warren-up.sh
node --test "$@" web/e2e/
