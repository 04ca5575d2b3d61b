#!/usr/bin/env bash
# Makes (once) the Python venv with the wrenn SDK and pytest that the
# control plane's SDK tests use, and prints its python's path:
#   WARREN_TEST_PYTHON=$(scripts/wrenn-venv.sh) cargo test -p warren-control
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/pyenv.sh" "$root/tests/.venv" "$root/tests/wrenn/requirements.txt" >&2
echo "$root/tests/.venv/bin/python"
