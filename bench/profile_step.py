"""Where a frame step's time goes (ours): mat-vecs vs everything else, by part.

    .venv/bin/python -m bench.profile_step FOLDER [--steps 10] [--parallel auto|on|off]

An instrumented pass evaluates the graph before and after every Linear (float or
quantized), so each mat-vec's time is measured alone; what remains of the part's time is the
other ops (norms, RoPE, attention over the cache, activations, embeddings, sampling) plus
the cost of the extra evaluations themselves. The plain step (one evaluation) is timed too,
so the instrumentation's own cost is visible. Also reports each part's mat-vec time against
the floor of its bytes (bench/floor.py's bandwidth for the same kind, one and two streams).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import weight_bytes  # noqa: E402


def profile(folder: str, steps: int = 10, warmup: int = 3, parallel: str = "auto") -> dict:
    from moshi_mlx.models import LmGen, load_lm
    from moshi_mlx.models.backend import prepare_lm
    from moshi_mlx.modules import parallel as par

    lm = load_lm(folder)  # its compute format is set just below
    fmt = prepare_lm(lm, parallel={"auto": "auto", "on": True, "off": False}[parallel])
    gen = LmGen(lm, seed=0, compute=fmt)
    rng = np.random.default_rng(0)
    user = rng.integers(0, lm.cfg.card, (2 * (steps + warmup) + 2, lm.cfg.user_q))
    gen.step(user[0])
    plain = []
    for i in range(1, steps + warmup + 1):
        t = time.perf_counter()
        gen.step(user[i])
        if i > warmup:
            plain.append((time.perf_counter() - t) * 1e3)

    part = {"name": "temporal"}
    buckets: dict[str, list[float]] = {}

    def add(key: str, ms: float) -> None:
        buckets.setdefault(key, [0.0])[-1] += ms

    classes = (nn.Linear, nn.QuantizedLinear, par.ParallelLinear, par.ParallelQuantizedLinear, par.CastLinear)
    originals = {c: c.__call__ for c in classes}

    def wrap(orig):
        def call(self, x):
            mx.eval(x)
            t = time.perf_counter()
            y = orig(self, x)
            mx.eval(y)
            add(f"{part['name']} mat-vecs", (time.perf_counter() - t) * 1e3)
            return y

        return call

    class Marked(LmGen):
        def _temporal(self, *args):  # LmGen._temporal's arguments, whatever they are
            part["name"] = "temporal"
            out = super()._temporal(*args)
            mx.eval(*out)
            part["t_temporal"] = time.perf_counter()
            part["name"] = "depformer"
            return out

    prof = Marked(lm, seed=0, compute=fmt)  # the plain step's format: the same work, instrumented
    prof.step(user[0])
    totals: dict[str, list[float]] = {}
    for c in classes:
        c.__call__ = wrap(originals[c])
    try:
        for i in range(1, steps + warmup + 1):
            for k in list(buckets):
                buckets[k].append(0.0)
            t = time.perf_counter()
            prof.step(user[i])
            e = time.perf_counter()
            if i > warmup:
                totals.setdefault("temporal", []).append((part["t_temporal"] - t) * 1e3)
                totals.setdefault("depformer", []).append((e - part["t_temporal"]) * 1e3)
                totals.setdefault("step", []).append((e - t) * 1e3)
    finally:
        for c, f in originals.items():
            c.__call__ = f
    med = {k: float(np.median(v[warmup:])) if len(v) > warmup else float("nan") for k, v in buckets.items()}
    res = {
        "folder": folder,
        "format": fmt.describe(),
        "plain_step_ms": float(np.median(plain)),
        "instrumented": {k: float(np.median(v)) for k, v in totals.items()},
        "mat_vecs_ms": med,
        "bytes": weight_bytes.step_bytes(lm),
    }
    for p in ("temporal", "depformer"):
        res[f"{p}_other_ms"] = res["instrumented"][p] - med.get(f"{p} mat-vecs", 0.0)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--parallel", default="auto", choices=("auto", "on", "off"))
    a = ap.parse_args(argv)
    r = profile(a.folder, a.steps, parallel=a.parallel)
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
