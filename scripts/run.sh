#!/usr/bin/env bash
# The main job: install moshi_mlx into .venv (once) and talk to Moshi.
#   ./scripts/run.sh -q 4                         # Moshi 7B int4 from the Hub, microphone + speakers
#   ./scripts/run.sh                              # offline demo: random-tiny model, simulated microphone
# Any flag of `python -m moshi_mlx.local` can be given (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# Installed = the venv's pip knows the package, installed from this setup.py (a stamp of its checksum),
# and the dependencies import. `import moshi_mlx` alone proves nothing here: it imports from the
# working tree even when nothing was ever installed.
stamp=.venv/.moshi_mlx-installed
want=$(cksum < setup.py)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || ! .venv/bin/python -m pip show -q moshi-mlx-local >/dev/null 2>&1 \
    || ! .venv/bin/python -c "import numpy, mlx.core, soundfile, sentencepiece, huggingface_hub, tqdm" >/dev/null 2>&1; then
    echo "scripts/run.sh: installing moshi_mlx and its dependencies into .venv (once)..." >&2
    log=$(mktemp)
    if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e .; } >"$log" 2>&1; then
        cat "$log"; echo "scripts/run.sh: installing moshi_mlx failed (log above)" >&2; exit 1
    fi
    rm -f "$log"
    echo "$want" > "$stamp"
fi
if [ $# -eq 0 ]; then
    echo "No model flags given: running the offline demo (random-tiny: random weights, it speaks NOISE)." >&2
    echo "For Moshi itself: ./scripts/run.sh -q 4   (downloads kyutai/moshiko-mlx-q4 once)" >&2
    mkdir -p out
    stamp=$(date +%Y%m%d-%H%M%S)  # a new pair of files each run: an earlier demo's are never replaced
    exec .venv/bin/python -m moshi_mlx.local --model random-tiny --simulate \
        --record "out/demo-conversation-$stamp.wav" --transcript "out/demo-transcript-$stamp.json"
fi
exec .venv/bin/python -m moshi_mlx.local "$@"
