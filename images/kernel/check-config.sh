#!/bin/sh
# Checks a guest kernel's .config for what Warren's microVMs need.
# Usage: images/kernel/check-config.sh path/to/.config
# Prints each missing option and exits 1 if any required one is missing.
set -eu

config=${1:?usage: check-config.sh path/to/.config}
[ -r "$config" ] || { echo "cannot read $config" >&2; exit 2; }

missing=0
# need OPTION WHY: OPTION must be =y (built in: the guest has no modules).
need() {
    if ! grep -qx "$1=y" "$config"; then
        echo "missing: $1=y ($2)"
        missing=$((missing + 1))
    fi
}
# want OPTION WHY: recommended, reported but not fatal.
want() {
    if ! grep -qx "$1=y" "$config"; then
        echo "recommended: $1=y ($2)"
    fi
}

need CONFIG_VIRTIO "virtio core"
need CONFIG_VIRTIO_MMIO "Firecracker's devices are virtio-mmio"
need CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES "Firecracker announces devices on the command line"
need CONFIG_VIRTIO_BLK "root disk /dev/vda"
need CONFIG_VIRTIO_NET "eth0"
need CONFIG_EXT4_FS "root filesystem"
need CONFIG_SERIAL_8250 "serial console"
need CONFIG_SERIAL_8250_CONSOLE "console=ttyS0"
need CONFIG_DEVTMPFS "init mounts devtmpfs on /dev"
need CONFIG_TMPFS "/run, /tmp, /dev/shm"
need CONFIG_PROC_FS "/proc"
need CONFIG_SYSFS "/sys"
need CONFIG_UNIX98_PTYS "devpts: envd's terminals"
need CONFIG_CGROUPS "cgroup2 for envd"
need CONFIG_INET "TCP/IP: envd on :49983"
need CONFIG_UNIX "Unix sockets"
need CONFIG_BINFMT_ELF "running programs"
need CONFIG_BINFMT_SCRIPT "init is a script"
need CONFIG_FUTEX "threads"
need CONFIG_EPOLL "envd"
need CONFIG_SIGNALFD "envd"
need CONFIG_TIMERFD "envd"
need CONFIG_EVENTFD "envd"
need CONFIG_INOTIFY_USER "envd's filesystem watch"
need CONFIG_KVM_GUEST "paravirtual clock and hints"
want CONFIG_IP_PNP "kernel applies ip= itself (the init does it otherwise)"
want CONFIG_VIRTIO_BALLOON "memory balloon"
want CONFIG_HW_RANDOM_VIRTIO "entropy device"
want CONFIG_VIRTIO_VSOCKETS "vsock"
want CONFIG_MEMCG "memory limits inside the guest"
want CONFIG_CGROUP_PIDS "pid limits inside the guest"
want CONFIG_SECCOMP "sandboxed programs that use seccomp"
want CONFIG_OVERLAY_FS "programs that use overlayfs"
want CONFIG_FUSE_FS "programs that use FUSE"

if [ "$missing" -gt 0 ]; then
    echo "$missing required option(s) missing"
    exit 1
fi
echo "ok: all required options present"
