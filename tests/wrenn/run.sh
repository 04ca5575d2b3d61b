#!/usr/bin/env bash
# The wrenn SDK against a whole local Warren (`warren up` with the real
# warren-agent, namespace backend). Creates the venv if needed, brings
# Warren up in a temp dir on private ports (tests/warren-up.sh), runs
# pytest, and always tears it down. Needs root.
#
#   tests/wrenn/run.sh [pytest args]
#
# Env: CARGO_TARGET_DIR (where the binaries are), PROFILE (debug, the
# default, or release; built if missing), WARREN_TEST_TEMPLATE (default tiny).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
python=$(scripts/wrenn-venv.sh)

profile=${PROFILE:-debug}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build -q $flag -p warren-control -p warren-cli -p warren-agent -p envd --bins
bin=$target/$profile

source tests/warren-up.sh
export WRENN_BASE_URL=$WARREN_TEST_URL
export WRENN_API_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$WARREN_TEST_CREDENTIALS")
"$python" -m pytest -q -p no:cacheprovider tests/wrenn "$@"
