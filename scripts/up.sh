#!/usr/bin/env bash
# `make up`: starts what Warren has today and says what is not there yet.
# (Replaced by `warren up` once the control plane lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
WARREN_DIR=${WARREN_DIR:-/var/lib/warren}
mkdir -p "$WARREN_DIR/logs"
pidfile="$WARREN_DIR/envd.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "envd already running (pid $(cat "$pidfile"))"
else
  nohup target/release/envd --host 127.0.0.1 >>"$WARREN_DIR/logs/envd.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 50); do curl -fsS http://127.0.0.1:49983/health >/dev/null 2>&1 && break; sleep 0.1; done
  echo "envd running on http://127.0.0.1:49983 (pid $(cat "$pidfile")), logs in $WARREN_DIR/logs/envd.log"
fi
echo "Try it with the e2b SDK: E2B_DEBUG=true python3 -c 'from e2b import Sandbox; print(Sandbox.create().commands.run(\"uname -a\").stdout)'"
echo "Not there yet: the control plane (console URL, API keys) and the agent; see README.md's status table."
