#!/usr/bin/env bash
# Install what the tests need into .venv and run them. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".[test]"; } >"$log" 2>&1; then
    cat "$log"; echo "scripts/test.sh: installing the package failed (log above)" >&2; exit 1
fi
rm -f "$log"
exec .venv/bin/python -m pytest "$@"
