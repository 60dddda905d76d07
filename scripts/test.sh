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
# real audio devices for the PortAudio test (headless Linux: a PulseAudio null sink)
if [ "$(uname)" = Linux ] && [ -z "${MOSHI_SKIP_AUDIO_SETUP:-}" ]; then
    eval "$(./scripts/setup_audio.sh)"
    if [ -n "${MOSHI_PULSE_STARTED:-}" ]; then
        trap 'XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR pulseaudio --kill >/dev/null 2>&1 || true' EXIT
    fi
fi
# a real Chromium for the browser test of the web page (Debian's package)
if [ "$(uname)" = Linux ] && [ -z "${MOSHI_SKIP_BROWSER_SETUP:-}" ]; then
    ./scripts/setup_browser.sh
fi
# in CI the real-device and browser tests must run, not skip
if [ -n "${CI:-}" ]; then export MOSHI_REQUIRE_AUDIO=1 MOSHI_REQUIRE_BROWSER=1; fi
.venv/bin/python -m pytest "$@"
