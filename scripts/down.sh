#!/usr/bin/env bash
# `make down`: stops what `make up` started.
set -euo pipefail
WARREN_DIR=${WARREN_DIR:-/var/lib/warren}
pidfile="$WARREN_DIR/envd.pid"
if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
  echo "envd stopped"
fi
rm -f "$pidfile"
