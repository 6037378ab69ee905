#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
#
#   bash tools/test.sh              # all tests
#   bash tools/test.sh -k browser   # extra arguments go to pytest
#
# DEEPHYS_VENV picks the virtual environment (default: .venv in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${DEEPHYS_VENV:-.venv}"

if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "== installing Debian's chromium (browser tests) and dataset-fashion-mnist (examples)"
    sudo_cmd=""
    if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv"
    python3 -m venv "$venv"
fi
echo "== installing deephys-lightning[test] into $venv"
"$venv/bin/python" -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
"$venv/bin/python" -c "import deephys_lightning, tensorboard_plugin_deephys.deephys_plugin, playwright"

echo "== ruff"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .

echo "== mypy"
"$venv/bin/mypy" deephys_lightning tensorboard_plugin_deephys

echo "== pytest"
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
