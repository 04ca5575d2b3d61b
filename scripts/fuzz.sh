#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60). cargo-fuzz is
# installed on demand; the sanitizer flags it needs are nightly-only, so the
# stable toolchain is told to allow them (RUSTC_BOOTSTRAP=1).
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
