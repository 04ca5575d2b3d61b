#!/usr/bin/env bash
# Side-by-side proxy benchmark: the same static upstream (nginx serving files)
# reached directly, through nginx as a reverse proxy, and through Warren's
# proxy (`warren-agent proxy`), all in one run. Prints a table with ratios.
#
# Needs: wrk, nginx, python3 (apt: wrk nginx python3). Env knobs:
#   CORES=1      worker count for both proxies and the upstream
#   DURATION=6   seconds per wrk run
#   ROUNDS=3     interleaved rounds (the table shows medians)
#   CONNS=64     concurrent connections for the small-response runs
#   IDLE=5000    idle connections for the memory-per-connection measurement
set -euo pipefail

CORES=${CORES:-1}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
IDLE=${IDLE:-5000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "proxy-compare: $tool is missing (apt-get install -y wrk nginx python3)" >&2; exit 1; }
done

echo "building warren-agent (release)…" >&2
cargo build --quiet --release -p warren-agent --bin warren-agent --manifest-path "$ROOT/Cargo.toml"
AGENT=$TARGET/release/warren-agent

WORK=$(mktemp -d /tmp/warren-proxy-bench.XXXXXX)
chmod 755 "$WORK"  # nginx workers run as an unprivileged user
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Ports unlikely to collide with other runs on this machine.
BASE=$((20000 + ($$ % 4000) * 10))
UP=$BASE; NGX=$((BASE + 1)); WRN=$((BASE + 2)); ADMIN=$((BASE + 3))

mkdir -p "$WORK/www"
head -c 100 /dev/urandom | base64 -w0 | head -c 100 > "$WORK/www/small.txt"
head -c $((100 << 20)) /dev/urandom > "$WORK/www/big.bin"

common_nginx() {
    cat <<CONF
worker_processes $CORES;
daemon off;
pid $WORK/$1.pid;
error_log $WORK/$1.error.log warn;
events { worker_connections 65535; multi_accept on; }
worker_rlimit_nofile 65535;
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 620s;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    fastcgi_temp_path $WORK/$1-fcgi;
    uwsgi_temp_path $WORK/$1-uwsgi;
    scgi_temp_path $WORK/$1-scgi;
CONF
}

# The upstream: nginx serving the files (fast, and identical for all three).
{ common_nginx upstream; cat <<CONF
    server { listen 127.0.0.1:$UP reuseport; root $WORK/www; }
}
CONF
} > "$WORK/upstream.conf"

# nginx as a reverse proxy, configured for speed: keep-alive upstream pool,
# no disk buffering, large buffers, no logging.
{ common_nginx proxy; cat <<CONF
    upstream capsule { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$NGX reuseport;
        location / {
            proxy_pass http://capsule;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_buffering on;
            proxy_buffers 64 64k;
            proxy_buffer_size 16k;
            proxy_busy_buffers_size 512k;
            proxy_max_temp_file_size 0;
        }
    }
}
CONF
} > "$WORK/proxy.conf"

cat > "$WORK/routes.json" <<JSON
{"capsules": {"bench": {"address": "127.0.0.1", "state": "running"}}}
JSON

nginx -c "$WORK/upstream.conf" -e "$WORK/upstream.error.log" & PIDS+=($!)
nginx -c "$WORK/proxy.conf" -e "$WORK/proxy.error.log" & PIDS+=($!)
NGINX_MASTER=$!
LOG_LEVEL=warn "$AGENT" proxy --routes "$WORK/routes.json" --listen "127.0.0.1:$WRN" --admin "127.0.0.1:$ADMIN" --cores "$CORES" & PIDS+=($!)
WARREN_PID=$!

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$UP"; wait_port "$NGX"; wait_port "$WRN"

ROUTE_HEADERS=(-H "E2b-Sandbox-Id: bench" -H "E2b-Sandbox-Port: $UP")
url() { echo "http://127.0.0.1:$1/$2"; }

# wrk output → "requests/s p50_ms p99_ms MB/s requests"
run_wrk() {
    local conns=$1; shift
    local out
    out=$(wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$@")
    python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(label):
    m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m: return float("nan")
    v = float(m.group(1)); return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
scale = {"B": 1/2**20, "KB": 1/2**10, "MB": 1, "GB": 2**10}[m.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errors: sys.exit(f"wrk saw errors:\n{out}")
total = int(re.search(r"(\d+) requests in", out).group(1))
print(f"{rps:.0f} {ms('50%'):.3f} {ms('99%'):.3f} {float(m.group(1)) * scale * 1.048576:.0f} {total}")
PY
}

# CPU time (user + system, clock ticks) of a set of processes.
cpu_ticks() { local total=0; for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$total"; }
NGINX_PIDS=("$NGINX_MASTER" $(pgrep -P "$NGINX_MASTER" | tr '\n' ' '))
TICK=$(getconf CLK_TCK)

# Rounds interleave the three targets so that drift in the machine's load
# (other work on the same cores) hits them alike; the table shows medians.
RESULTS=$WORK/results
for round in $(seq "$ROUNDS"); do
    for target in direct nginx warren; do
        case $target in
            direct) port=$UP; extra=(); pids=() ;;
            nginx) port=$NGX; extra=(); pids=("${NGINX_PIDS[@]}") ;;
            warren) port=$WRN; extra=("${ROUTE_HEADERS[@]}"); pids=("$WARREN_PID") ;;
        esac
        echo "round $round/$ROUNDS: $target…" >&2
        wrk -t1 -c"$CONNS" -d1s "${extra[@]}" "$(url "$port" small.txt)" >/dev/null  # warm-up
        before=$(cpu_ticks "${pids[@]}")
        read -r rps p50 p99 _ total < <(run_wrk "$CONNS" "${extra[@]}" "$(url "$port" small.txt)")
        after=$(cpu_ticks "${pids[@]}")
        cpu=$(python3 -c "print(f'{($after - $before) * 1e6 / $TICK / $total:.1f}')")
        read -r _ _ _ mbs _ < <(run_wrk 4 "${extra[@]}" "$(url "$port" big.bin)")
        echo "$target rps $rps" >> "$RESULTS"; echo "$target p50 $p50" >> "$RESULTS"; echo "$target p99 $p99" >> "$RESULTS"
        echo "$target mbs $mbs" >> "$RESULTS"
        [[ $target == direct ]] || echo "$target cpu $cpu" >> "$RESULTS"
    done
done

# Memory per idle connection: RSS growth while $IDLE keep-alive connections
# (each having made one request) sit idle.
rss_kib() { local total=0; for pid in "$@"; do total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status"))); done; echo "$total"; }
idle_bytes() {
    local port=$1; shift
    local pids=("$@") before after
    before=$(rss_kib "${pids[@]}")
    python3 - "$port" "$IDLE" "$UP" "$WORK/hold.$port" <<'PY' &
import resource, socket, sys, time, os
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, count, up, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /small.txt HTTP/1.1\r\nHost: b\r\nE2b-Sandbox-Id: bench\r\nE2b-Sandbox-Port: {up}\r\n\r\n".encode())
    data = b""
    while not data.endswith(b"\r\n\r\n") and len(data) < 200:
        data += s.recv(65536)
        if b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= 100: break
    held.append(s)
open(flag, "w").close()
time.sleep(3600)
PY
    local holder=$!
    for _ in $(seq 600); do [[ -e "$WORK/hold.$port" ]] && break; sleep 0.1; done
    sleep 1
    after=$(rss_kib "${pids[@]}")
    kill "$holder"; wait "$holder" 2>/dev/null || true
    echo $(( (after - before) * 1024 / IDLE ))
}
echo "idle connections ($IDLE each)…" >&2
echo "nginx idle $(idle_bytes "$NGX" "${NGINX_PIDS[@]}")" >> "$RESULTS"
echo "warren idle $(idle_bytes "$WRN" "$WARREN_PID")" >> "$RESULTS"

echo
echo "Proxy comparison: cores=$CORES, $ROUNDS interleaved rounds (medians), ${DURATION}s per run, $CONNS connections (small), 4 connections (100 MiB bodies), $IDLE idle connections; $(nproc) CPUs shared by wrk, upstream and proxy"
python3 - "$RESULTS" <<'PY'
import statistics, sys
values = {}
for line in open(sys.argv[1]):
    target, metric, value = line.split()
    values.setdefault((target, metric), []).append(float(value))
def med(target, metric):
    v = values.get((target, metric))
    return statistics.median(v) if v else None
def fmt(x, digits):
    return "-" if x is None else f"{x:.{digits}f}"
def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}"
rows = [
    ("small: requests/s (higher)", "rps", 0),
    ("small: p50 ms (lower)", "p50", 3),
    ("small: p99 ms (lower)", "p99", 3),
    ("small: proxy CPU us/request", "cpu", 1),
    ("100 MiB: MB/s (higher)", "mbs", 0),
    ("idle conn: bytes (lower)", "idle", 0),
]
print(f"{'metric':<30}{'direct':>10}{'nginx':>10}{'warren':>10}{'warren/nginx':>14}{'warren/direct':>15}")
for label, metric, digits in rows:
    d, n, w = med("direct", metric), med("nginx", metric), med("warren", metric)
    print(f"{label:<30}{fmt(d, digits):>10}{fmt(n, digits):>10}{fmt(w, digits):>10}{ratio(w, n):>14}{ratio(w, d):>15}")
PY
