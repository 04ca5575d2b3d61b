#!/usr/bin/env bash
# Restore benchmark against a real Firecracker: cold restores against
# restores that prefetch the working set the previous one recorded, both
# served by `warren-uffd serve` with the agent's settings (64 KiB
# fault-around, recording on, "last cycle").
#
# It boots a microVM, snapshots it RESTORE_BOOT_SECS after InstanceStart (so
# it works where the guest cannot finish booting: it only has to be running),
# then, RESTORE_ROUNDS times: a cold restore (no working set; records one)
# and a prefetched restore (prefetches it, refreshes it). Each restore is
# `PUT /snapshot/load` with `resume_vm: true` (the load time: from the
# request to the 204, after which the vCPUs run), then the VM runs
# RESTORE_RUN_MS and is stopped; the page server's counters give the faults.
# Prints medians and the prefetched/cold ratios.
#
#   FIRECRACKER_BIN=/path/to/firecracker WARREN_KERNEL=/path/to/vmlinux \
#     benches/scripts/fc-restore.sh
#
# Skips (exit 0, with a message) without FIRECRACKER_BIN, WARREN_KERNEL or a
# usable /dev/kvm. The README says how to build Firecracker from source.
# Options: RESTORE_MEM_MIB (256), RESTORE_BOOT_SECS (3), RESTORE_RUN_MS
# (1000), RESTORE_ROUNDS (5), WARREN_UFFD_BIN (built if unset).

set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    echo "fc-restore: skipped: $*"
    exit 0
}
[[ -n ${FIRECRACKER_BIN:-} && -x ${FIRECRACKER_BIN} ]] ||
    skip "set FIRECRACKER_BIN to a Firecracker binary (README: 'Firecracker from source')"
[[ -n ${WARREN_KERNEL:-} && -f ${WARREN_KERNEL} ]] ||
    skip "set WARREN_KERNEL to an uncompressed guest kernel (vmlinux)"
[[ -r /dev/kvm && -w /dev/kvm ]] || skip "/dev/kvm is missing or not accessible"
command -v curl >/dev/null || skip "curl is not installed"

MEM_MIB=${RESTORE_MEM_MIB:-256}
BOOT_SECS=${RESTORE_BOOT_SECS:-3}
RUN_MS=${RESTORE_RUN_MS:-1000}
ROUNDS=${RESTORE_ROUNDS:-5}
if [[ -z ${WARREN_UFFD_BIN:-} ]]; then
    cargo build --quiet --release -p warren-uffd
    WARREN_UFFD_BIN="${CARGO_TARGET_DIR:-target}/release/warren-uffd"
fi

work=$(mktemp -d /tmp/fc-restore.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# api SOCKET METHOD PATH [BODY]: prints "<status> <seconds>"; the body of the
# answer is left in $work/answer.
api() {
    local args=(-sS --unix-socket "$1" -X "$2" "http://localhost$3" -o "$work/answer"
        -w '%{http_code} %{time_total}')
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' -d "$4")
    curl "${args[@]}"
}

# must SOCKET METHOD PATH [BODY]: the call, which must succeed.
must() {
    local out
    out=$(api "$@")
    if [[ ${out%% *} != 2* ]]; then
        echo "fc-restore: $2 $3 failed: $out $(cat "$work/answer")" >&2
        exit 1
    fi
    echo "$out"
}

# start_firecracker NAME: starts one with its API socket at $work/NAME.sock.
start_firecracker() {
    local sock="$work/$1.sock"
    rm -f "$sock"
    "$FIRECRACKER_BIN" --api-sock "$sock" --id "$1" >"$work/$1.log" 2>&1 &
    pids+=($!)
    fc_pid=$!
    for _ in $(seq 200); do
        [[ -S $sock ]] && return
        sleep 0.01
    done
    echo "fc-restore: firecracker did not open its API socket; log:" >&2
    cat "$work/$1.log" >&2
    exit 1
}

stop() {
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

echo "== booting a ${MEM_MIB} MiB microVM; snapshot ${BOOT_SECS} s after InstanceStart"
start_firecracker boot
must "$work/boot.sock" PUT /machine-config "{\"vcpu_count\": 1, \"mem_size_mib\": $MEM_MIB}" >/dev/null
must "$work/boot.sock" PUT /boot-source \
    "{\"kernel_image_path\": \"$WARREN_KERNEL\", \"boot_args\": \"console=ttyS0 reboot=k pci=off\"}" >/dev/null
must "$work/boot.sock" PUT /actions '{"action_type": "InstanceStart"}' >/dev/null
sleep "$BOOT_SECS"
must "$work/boot.sock" PATCH /vm '{"state": "Paused"}' >/dev/null
must "$work/boot.sock" PUT /snapshot/create \
    "{\"snapshot_type\": \"Full\", \"snapshot_path\": \"$work/vmstate\", \"mem_file_path\": \"$work/mem\"}" >/dev/null
stop "$fc_pid"
echo "memory file: $(($(stat -c %s "$work/mem") >> 20)) MiB, $(($(du -k "$work/mem" | cut -f1) >> 10)) MiB on disk as Firecracker wrote it"
"$WARREN_UFFD_BIN" sparsify --memory "$work/mem"
echo "memory file: $(($(du -k "$work/mem" | cut -f1) >> 10)) MiB on disk with zero pages as holes"

# restore KIND [serve args...]: one restore; appends "load_ms faults copied
# zeroed prefetched" to $work/KIND.
restore() {
    local kind=$1
    shift
    local sock="$work/uffd.sock"
    rm -f "$sock"
    "$WARREN_UFFD_BIN" serve --socket "$sock" --memory "$work/mem" "$@" >"$work/serve.out" 2>"$work/serve.err" &
    local serve_pid=$!
    pids+=("$serve_pid")
    for _ in $(seq 500); do
        grep -q '^listening on' "$work/serve.out" 2>/dev/null && break
        sleep 0.01
    done
    start_firecracker restore
    local out
    out=$(must "$work/restore.sock" PUT /snapshot/load \
        "{\"snapshot_path\": \"$work/vmstate\", \"mem_backend\": {\"backend_type\": \"Uffd\", \"backend_path\": \"$sock\"}, \"resume_vm\": true}")
    sleep "$(awk "BEGIN {print $RUN_MS / 1000}")"
    # The VM must still be running: it ran from the snapshot all along.
    local state
    must "$work/restore.sock" GET / >/dev/null
    state=$(grep -o '"state":"[A-Za-z]*"' "$work/answer" || true)
    stop "$fc_pid"
    wait "$serve_pid" || {
        echo "fc-restore: the page server failed:" >&2
        cat "$work/serve.out" "$work/serve.err" >&2
        exit 1
    }
    local line field
    line=$(grep '^end=' "$work/serve.out")
    field() { grep -o " $1=[0-9]*" <<<"$line" | cut -d= -f2; }
    echo "$(awk "BEGIN {printf \"%.2f\", ${out#* } * 1000}") $(field faults) $(field copied) $(field zeroed) $(field prefetched) $state" >>"$work/$kind"
}

set_path="$work/mem.wset"
for round in $(seq "$ROUNDS"); do
    rm -f "$set_path"
    restore cold --record "$set_path"
    restore prefetched --prefetch "$set_path" --record "$set_path"
    echo "round $round: cold $(tail -1 "$work/cold") | prefetched $(tail -1 "$work/prefetched")"
done

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
col() { cut -d' ' -f"$2" "$work/$1" | median; }
echo
echo "### Firecracker restore, ${MEM_MIB} MiB guest, median of ${ROUNDS} rounds (load: PUT /snapshot/load with resume_vm to its 204; faults over ${RUN_MS} ms)"
echo
echo "| restore | load ms | faults | pages copied | zero pages | prefetched |"
echo "|---|---:|---:|---:|---:|---:|"
for kind in cold prefetched; do
    echo "| $kind | $(col "$kind" 1) | $(col "$kind" 2) | $(col "$kind" 3) | $(col "$kind" 4) | $(col "$kind" 5) |"
done
awk -v cl="$(col cold 1)" -v pl="$(col prefetched 1)" -v cf="$(col cold 2)" -v pf="$(col prefetched 2)" \
    'BEGIN { printf "\nprefetched / cold: faults %.1f %%, load time %.1f %%\n", 100 * pf / (cf > 0 ? cf : 1), 100 * pl / cl }'
