#!/usr/bin/env bash
# The wrenn SDK against a whole local Warren (`warren up` with the real
# warren-agent, namespace backend). Creates the venv if needed, brings
# Warren up in a temp dir on private ports, runs pytest, and always tears
# it down. Needs root (the agent makes namespaces and cgroups).
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

# A private address block, agent ports, nftables table and cgroup parent,
# shared with the Rust agent tests' allocator (flock held until exit).
mkdir -p /tmp/warren-agent-test-blocks
for n in $(seq 1 250); do
    exec 9>"/tmp/warren-agent-test-blocks/$n.lock"
    flock -n 9 && break
done
dir=$(mktemp -d /tmp/warren-wrenn-XXXXXX)
chmod 755 "$dir"
port=$((20000 + RANDOM % 20000))
rpc=127.0.0.1:$((port + 1))
proxy=127.0.0.1:$((port + 2))
export WARREN_AGENT_ARGS="--admin-listen 127.0.0.1:$((port + 3)) --net-prefix wr$n --nft-table wr$n \
    --capsule-net 10.213.$n.0/24 --veth-net 10.214.$n.0/24 --cgroup-parent wr$n --slot-pool 2"
cleanup() {
    "$bin/warren" --dir "$dir" down || true
    "$bin/warren-agent" purge --data-dir "$dir" $WARREN_AGENT_ARGS >/dev/null 2>&1 || true
    for h in /sys/fs/cgroup/*/; do rmdir "$h/wr$n" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

"$bin/warren" --dir "$dir" up --detach --listen "127.0.0.1:$port" \
    --default-template "${WARREN_TEST_TEMPLATE:-tiny}" \
    --agent-bin "$bin/warren-agent" --agent-rpc "$rpc" --agent-proxy "$proxy"
creds=$dir/credentials.json
export WRENN_BASE_URL=http://127.0.0.1:$port
export WRENN_API_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$creds")
export WARREN_PROXY_ADDR=$proxy
"$python" -m pytest -q -p no:cacheprovider tests/wrenn "$@"
