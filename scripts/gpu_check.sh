#!/usr/bin/env bash
# Every GPU measurement of issue 9 in one device call, sized for the 600 s a call may take:
#   ../shared/gpu/prepare.sh                          # here, once (the kit into .gpu/)
#   run: bash .gpu/bin/stage.sh                       (carry .gpu/a .gpu/bin)
#   run: source .gpu/bin/install.sh && bash scripts/gpu_check.sh   (carry .gpu/b .gpu/whl .gpu/bin)
# Each part has its own time limit and writes its own file under $OUT (default out/gpu), so
# a part that overruns costs only itself. `bash scripts/gpu_check.sh --smoke` rehearses the
# command lines on any device (toy sizes, no upstream, no PyTorch).
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=(--smoke --no-upstream) ; UP=(--no-upstream) ; T=1
else
  SMOKE=(--upstream-path /tmp/upstream) ; UP=(--upstream-path /tmp/upstream) ; T=0
fi
part() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s)"
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0))s; last lines:"; tail -n 12 "$OUT/$name.log" | sed 's/^/   /'
}
"$PY" -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device())"
part parity 60 "$PY" -m bench.path_parity --out "$OUT/parity.json"
part overhead 60 "$PY" -m bench.step_overhead --width 64 --formats bf16 --profiles gpu "${UP[@]}" \
  --out "$OUT/step_overhead"
part lm 290 "$PY" -m bench.suite --device gpu --only lm "${SMOKE[@]}" --gpu-steps 50 --gpu-warmup 10 \
  --out "$OUT/suite-gpu-lm.json"
if [ $T = 0 ]; then
  part torch_mimi 100 "$PY" -m bench.suite --device gpu --only torch,mimi "${SMOKE[@]}" \
    --torch-peer .gpu/bin/torch_peer.py --torch-path /tmp/torch-moshi --gpu-steps 50 --gpu-warmup 10 \
    --out "$OUT/suite-gpu-mimi.json"
else
  part torch_mimi 100 "$PY" -m bench.suite --device gpu --only mimi "${SMOKE[@]}" --out "$OUT/suite-gpu-mimi.json"
fi
part loop 60 "$PY" -m bench.suite --device gpu --only loop "${SMOKE[@]}" --loop-seconds 8 \
  --out "$OUT/suite-gpu-loop.json"
# issue 26: every compiled path on the GPU, then the process must exit with code 0 (rc=0)
part exit 60 "$PY" tests/runtime/compiled_paths_exit.py
echo "results in $OUT"
