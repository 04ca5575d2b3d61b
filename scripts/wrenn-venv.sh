#!/usr/bin/env bash
# Makes (once) the Python venv with the wrenn SDK and pytest that the
# control plane's SDK tests use, and prints its python's path:
#   WARREN_TEST_PYTHON=$(scripts/wrenn-venv.sh) cargo test -p warren-control
set -euo pipefail
venv="$(cd "$(dirname "$0")/.." && pwd)/tests/.venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import wrenn' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    # wrenn declares Python >= 3.13 but runs on 3.11.
    "$venv/bin/pip" install -q --ignore-requires-python wrenn pytest httpx >&2
fi
echo "$venv/bin/python"
