#!/usr/bin/env bash
# Creates (or refreshes) a Python virtualenv for the tests from a requirements
# file. Usage: scripts/pyenv.sh VENV_DIR REQUIREMENTS_FILE
# Re-installs only when the requirements file changed.
set -euo pipefail
venv=$1
req=$2
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
# --ignore-requires-python: the wrenn SDK declares Python 3.13 but runs on 3.11.
"$venv/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python -r "$req"
echo "$want" > "$stamp"
