#!/usr/bin/env bash
# The wrenn SDK against a whole local Warren (`warren up` with the real
# warren-agent, namespace backend). Creates the venv if needed, brings
# Warren up in a temp dir on private ports, runs pytest, and always tears
# it down. Needs root (the agent makes namespaces and cgroups).
#
#   tests/wrenn/run.sh [pytest args]
#
# Env: CARGO_TARGET_DIR (where the binaries are; built if missing),
# WARREN_TEST_TEMPLATE (default tiny).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
python=$(scripts/wrenn-venv.sh)

cargo build -q --release -p warren-control
if ! cargo build -q --release -p warren-dataplane --bin warren-agent 2>/dev/null \
    || [ ! -x "$target/release/warren-agent" ]; then
    echo "SKIP tests/wrenn: no warren-agent binary yet (the agent lands with issue 5)"
    exit 0
fi

dir=$(mktemp -d /tmp/warren-wrenn-XXXXXX)
chmod 755 "$dir"
port=$((20000 + RANDOM % 20000))
rpc=127.0.0.1:$((port + 1))
proxy=127.0.0.1:$((port + 2))
cleanup() {
    "$target/release/warren" --dir "$dir" down || true
    rm -rf "$dir"
}
trap cleanup EXIT

"$target/release/warren" --dir "$dir" up --detach --listen "127.0.0.1:$port" \
    --agent-bin "$target/release/warren-agent" --agent-rpc "$rpc" --agent-proxy "$proxy"
creds=$dir/credentials.json
export WRENN_BASE_URL=http://127.0.0.1:$port
export WRENN_API_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$creds")
export WARREN_PROXY_ADDR=$proxy
"$python" -m pytest -q -p no:cacheprovider tests/wrenn "$@"
