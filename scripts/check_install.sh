#!/usr/bin/env bash
# A clean install runs the README's commands from another folder (offline forms: the demo models).
#   ./scripts/check_install.sh            # venv in a temporary folder, `pip install .`, each command, rc checked
# What it proves: the wheel alone (no checkout: package data, entry points, LICENSE) is enough.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
mkdir "$WORK/src"  # the tracked files only (no build/ or egg-info left in the checkout)
git -C "$SRC" ls-files -z | (cd "$SRC" && tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
"$PY" -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q "$WORK/src" || { echo "install failed"; exit 1; }
B="$WORK/venv/bin"
cd "$WORK" && mkdir run && cd run
export HF_HUB_OFFLINE=1
fails=0
check() {  # expected-rc command...
    local want=$1; shift
    "$@" >out.log 2>&1; local rc=$?
    if [ "$rc" != "$want" ]; then echo "FAIL (rc $rc, want $want): $*"; tail -3 out.log; fails=$((fails + 1)); else echo "ok: $*"; fi
}
cp "$("$B/python" -c 'import moshi_mlx; print(moshi_mlx.demo_clip())')" question.wav
files=$("$B/pip" show -f moshi-mlx-local)
for f in LICENSE moshi_mlx/assets/hello.wav moshi_mlx/assets/demo_tokenizer.model; do
    grep -q "$f" <<<"$files" || { echo "FAIL: $f not installed"; fails=$((fails + 1)); }
done
check 0 "$B/moshi-local" --model random-tiny --simulate --duration 2
check 0 "$B/python" -m moshi_mlx.local --model random-tiny --simulate --record talk.wav --transcript talk.json --duration 2
check 0 "$B/python" -m moshi_mlx.run_inference question.wav answer.wav --transcript answer.json --model random-tiny --quiet
check 2 "$B/python" -m moshi_mlx.run_inference question.wav answer.wav --model random-tiny --quiet   # exists: --force
check 0 "$B/python" -m moshi_mlx.tts "Hello there." out.wav --model tts-tiny --voice random --quiet
check 0 "$B/python" -m moshi_mlx.stt question.wav --transcript talk.srt --model random-tiny-stt --quiet
check 0 "$B/python" -m moshi_mlx.helium "Once upon a time" --model random-tiny-helium -n 12
check 0 "$B/python" -m moshi_mlx.convert --model random-tiny --out tiny-q4 -q 4 --quiet
check 0 "$B/python" -m moshi_mlx.local --hf-repo tiny-q4 --simulate --duration 2
check 0 "$B/python" -m moshi_mlx.quality --model random-tiny tiny-q4 --frames 8
check 0 "$B/python" -m moshi_mlx.translate question.wav fr-en.wav --model random-tiny-hibiki-zero --quiet
check 0 "$B/moshi-mimi" roundtrip question.wav rt.wav --model random-tiny --quiet
check 0 "$B/python" "$SRC/examples/talk.py" random-tiny reply.wav
echo "$fails failed"
exit $((fails > 0))
