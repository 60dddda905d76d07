"""One LM case of the suite, ours, in its own process (so its peak memory is its own).

    .venv/bin/python -m bench.lm_ours FOLDER [--steps 50] [--warmup 5] [--layer-steps 5]
        [--activation auto|stored|float32|bfloat16] [--parallel auto|on|off]

Loads the model folder, prepares it for the backend (`models.backend.prepare_lm`), then
runs `LmGen.step` on random user codes with the reference sampling settings (audio
temperature 0.8 / top-k 250, text 0.7 / top-k 25). Each step is timed as a whole, and split
in two by evaluating the text token before the depformer runs (one extra sync, which the
product does not do: it builds the depformer's graph while the temporal transformer
computes). A short second pass times each temporal layer alone (evaluated after each
layer), for the per-layer extrapolation. Prints one line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import weight_bytes  # noqa: E402  (standalone, shared with the upstream script)
from proc_memory import peak_rss_mb, rss_mb  # noqa: E402,F401


def full_model_upcast(lm, full_layers: int) -> tuple[list[str], dict]:
    """What `prepare_lm`'s automatic fp32 upcast would choose for the full-depth model (its
    other layers loaded, their fp32 copies counted), so that a reduced model is measured in
    the format the real one would get on this machine."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from moshi_mlx.models.backend import mem_available, plan_upcast, upcast_extra_bytes

    layer = lm.transformer.layers[0]
    more = full_layers - lm.cfg.num_layers
    layer_bytes = sum(v.nbytes for _, v in tree_flatten(layer.parameters()))
    layer_extra = sum(
        m.weight.size * (4 - m.weight.itemsize)
        for _, m in layer.named_modules()
        if isinstance(m, nn.Linear) and m.weight.dtype in (mx.bfloat16, mx.float16)
    )
    extra = upcast_extra_bytes(lm)
    extra["temporal"] = extra.get("temporal", 0) + more * layer_extra
    avail = mem_available() or 0
    budget = max(0, avail - more * layer_bytes) // 4
    info = {
        "mem_available_gb": avail / 2**30,
        "full_model_extra_gb": {k: v / 2**30 for k, v in extra.items()},
        "budget_gb": budget / 2**30,
    }
    return plan_upcast(extra, budget), info


def run(
    folder: str,
    steps: int,
    warmup: int,
    layer_steps: int,
    activation: str,
    parallel: str,
    seed: int,
    full_layers: int | None = None,
    upcast: str = "auto",
) -> dict:
    from moshi_mlx.models import LmGen, load_lm
    from moshi_mlx.models.backend import prepare_lm

    t0 = time.perf_counter()
    lm = load_lm(folder)  # its compute format is set just below
    par = {"auto": "auto", "on": True, "off": False}[parallel]
    upcast_info = {}
    if upcast == "auto" and full_layers and mx.default_device().type == mx.DeviceType.cpu:
        up, upcast_info = full_model_upcast(lm, full_layers)
    else:
        up = {"auto": "auto", "none": False, "all": True}.get(upcast, upcast.split("+"))
    fmt = prepare_lm(lm, activation=activation, parallel=par, upcast=up, upcast_budget=2**62 if up is True else None)
    mx.eval(lm.parameters())
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()
    cfg = lm.cfg

    marks: dict[str, float] = {}

    class SplitGen(LmGen):
        def _temporal(self, tokens, *key):  # (the text token's key since LmGen samples per-step keys)
            h, guided, text = super()._temporal(tokens, *key)
            mx.eval(h, text)
            marks["temporal_done"] = time.perf_counter()
            return h, guided, text

    gen = SplitGen(lm, seed=seed, compute=fmt)
    rng = np.random.default_rng(seed)
    user = rng.integers(0, cfg.card, (warmup + steps + layer_steps + 1, cfg.user_q))
    gen.step(user[0])  # position 0 (initial tokens) runs inside the first call: keep it out
    step_ms, temporal_ms, dep_ms = [], [], []
    for i in range(1, warmup + steps + 1):
        t = time.perf_counter()
        gen.step(user[i])
        e = time.perf_counter()
        if i > warmup:
            step_ms.append((e - t) * 1e3)
            temporal_ms.append((marks["temporal_done"] - t) * 1e3)
            dep_ms.append((e - marks["temporal_done"]) * 1e3)
    rss_steps = rss_mb()

    # per-layer pass: the temporal transformer layer by layer, on the same caches
    layer_ms: list[float] = []
    for j in range(layer_steps + 1):
        toks = mx.array(np.maximum(gen._inputs(gen.position + j), 0).astype(np.int32))[None, :, None]
        x = lm.embed(toks)
        mx.eval(x)
        per = []
        for layer, c in zip(lm.transformer.layers, gen._cache):
            t = time.perf_counter()
            x = layer(x, c)
            mx.eval(x)
            per.append((time.perf_counter() - t) * 1e3)
        if j:
            layer_ms.extend(per)
    bytes_ = weight_bytes.step_bytes(lm)
    return {
        "impl": "ours",
        "variant": f"ours ({fmt.describe()})",
        "activation_dtype": fmt.activation_dtype,
        "parallel_linears": fmt.parallel_linears,
        "upcast": fmt.upcast,
        "upcast_plan": upcast_info,
        "mlx": mx.__version__,
        "layers": cfg.num_layers,
        "steps": steps,
        "warmup": warmup,
        "step_ms_raw": step_ms,
        "temporal_ms_raw": temporal_ms,
        "depformer_ms_raw": dep_ms,
        "layer_ms_raw": layer_ms,
        "bytes": bytes_,
        "load_s": load_s,
        "rss_loaded_mb": rss_loaded,
        "rss_steps_mb": rss_steps,
        "peak_rss_mb": peak_rss_mb(),
        "mlx_peak_mb": mx.get_peak_memory() / 2**20,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layer-steps", type=int, default=5)
    ap.add_argument("--activation", default="auto")
    ap.add_argument("--parallel", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-layers", type=int, help="plan the automatic fp32 upcast for this depth")
    ap.add_argument("--upcast", default="auto", help="auto | none | all | depformer[+temporal]")
    a = ap.parse_args(argv)
    res = run(a.folder, a.steps, a.warmup, a.layer_steps, a.activation, a.parallel, a.seed, a.full_layers, a.upcast)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
