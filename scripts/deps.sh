#!/usr/bin/env bash
# Installs the system packages Warren builds, runs and tests with, using apt,
# and only those missing. Idempotent; safe to run on every `make`.
# Rust comes from the machine's toolchain (rustup); Python and npm packages
# are installed by scripts/pyenv.sh and `npm ci` into the tree.
set -euo pipefail

packages=(
  # building
  build-essential pkg-config
  # capsules: namespaces, links, firewall, cgroups, the tiny template
  iproute2 nftables util-linux procps busybox-static kmod
  # templates and disks
  e2fsprogs xfsprogs dmsetup debootstrap
  # the control plane's database (a private cluster per test run)
  postgresql
  # benchmarks: the proxy is compared against nginx, load from wrk
  nginx-light wrk
  # test clients: the e2b/wrenn SDKs and the npm Connect client
  python3 python3-venv nodejs npm curl ca-certificates
  # the web console: built with node/npm; its browser tests drive Debian's chromium
  chromium
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
# A machine may carry node/python outside apt (nvm, pyenv): those count.
filtered=()
for pkg in "${missing[@]}"; do
  case "$pkg" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    python3) command -v python3 >/dev/null 2>&1 && continue ;;
    python3-venv) python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && continue ;;
  esac
  filtered+=("$pkg")
done

if [ ${#filtered[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${filtered[*]}"
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${filtered[@]}"
