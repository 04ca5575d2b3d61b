# Sourced by the test runners (tests/wrenn/run.sh, web/e2e/run.sh): brings a
# whole local Warren up (`warren up` with the real warren-agent, namespace
# backend) in a temp dir on private ports, and tears it down on exit.
# Needs root (the agent makes namespaces and cgroups).
#
# In: $bin, the directory holding warren and warren-agent;
#     WARREN_TEST_TEMPLATE (default tiny).
# Out: WARREN_TEST_DIR, WARREN_TEST_URL, WARREN_TEST_CREDENTIALS (the JSON
#     `warren up` wrote: url, api_key, admin_email, admin_password) and
#     WARREN_PROXY_ADDR (the agent's data plane).

# A private address block, agent ports, nftables table and cgroup parent,
# shared with the Rust agent tests' allocator (flock held until exit).
mkdir -p /tmp/warren-agent-test-blocks
for n in $(seq 1 250); do
    exec 9>"/tmp/warren-agent-test-blocks/$n.lock"
    flock -n 9 && break
done
WARREN_TEST_DIR=$(mktemp -d /tmp/warren-test-XXXXXX)
chmod 755 "$WARREN_TEST_DIR"
port=$((20000 + RANDOM % 20000))
rpc=127.0.0.1:$((port + 1))
export WARREN_PROXY_ADDR=127.0.0.1:$((port + 2))
export WARREN_AGENT_ARGS="--admin-listen 127.0.0.1:$((port + 3)) --net-prefix wr$n --nft-table wr$n \
    --capsule-net 10.213.$n.0/24 --veth-net 10.214.$n.0/24 --cgroup-parent wr$n --slot-pool 2"
warren_test_down() {
    "$bin/warren" --dir "$WARREN_TEST_DIR" down || true
    "$bin/warren-agent" purge --data-dir "$WARREN_TEST_DIR" $WARREN_AGENT_ARGS >/dev/null 2>&1 || true
    for h in /sys/fs/cgroup/*/; do rmdir "$h/wr$n" 2>/dev/null || true; done
    rm -rf "$WARREN_TEST_DIR"
}
trap warren_test_down EXIT

"$bin/warren" --dir "$WARREN_TEST_DIR" up --detach --listen "127.0.0.1:$port" \
    --default-template "${WARREN_TEST_TEMPLATE:-tiny}" \
    --agent-bin "$bin/warren-agent" --agent-rpc "$rpc" --agent-proxy "$WARREN_PROXY_ADDR" || {
    tail -n 40 "$WARREN_TEST_DIR"/logs/*.log >&2 || true
    exit 1
}
export WARREN_TEST_DIR
export WARREN_TEST_URL=http://127.0.0.1:$port
export WARREN_TEST_CREDENTIALS=$WARREN_TEST_DIR/credentials.json
