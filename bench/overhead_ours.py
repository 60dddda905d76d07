"""One case of bench/step_overhead.py, ours, in its own process:

    .venv/bin/python -m bench.overhead_ours FOLDER [--steps 30] [--warmup 5] [--profile auto|cpu|gpu]
    .venv/bin/python -m bench.overhead_ours --random SHAPE:LAYERS:FMT ...

Loads the folder (or builds the shape with MLX's random init in memory, quantized
uniformly: no file, as fast on a GPU machine as the weights can be drawn), prepares it (`models.backend.prepare_lm`; `--profile gpu` applies the
accelerator format whatever the device, to measure that code path's host overhead here),
then measures `LmGen.step` with the reference sampling (bench/graph_count.py). Prints one
line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graph_count  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def random_model(spec: str):
    """SHAPE:LAYERS:FMT -> our Lm with MLX's default random init, bf16, quantized uniformly."""
    import mlx.core as mx

    from bench.lm_weights import quant_params, shaped_config
    from moshi_mlx.models import Lm
    from moshi_mlx.weights.quantize import quantize_model

    shape, layers, fmt = spec.split(":")
    lm = Lm(shaped_config(shape, int(layers)))
    lm.set_dtype(mx.bfloat16)
    q = quant_params(shape, fmt)
    if q is not None:
        quantize_model(lm, *q)
    mx.eval(lm.parameters())
    return lm


def run(
    folder: str | None,
    steps: int,
    warmup: int,
    profile: str,
    seed: int = 0,
    random: str | None = None,
    compile: str = "auto",
    start_full: bool = False,
    unfused_residuals: bool = False,
) -> dict:
    import mlx.core as mx

    from moshi_mlx.models import LmGen, load_lm
    from moshi_mlx.models.backend import prepare_lm

    if unfused_residuals:  # residual adds as their own kernels (StepLinear.fuse_residual)
        from moshi_mlx.modules.step_linear import StepLinear

        StepLinear.fuse_residual = False
    t0 = time.perf_counter()
    if random:
        lm = random_model(random)
    else:
        lm = load_lm(folder)  # its compute format is set just below
    fmt = prepare_lm(lm, profile=profile, compile={"auto": "auto", "on": True, "off": False}[compile])
    mx.eval(lm.parameters())
    load_s = time.perf_counter() - t0
    gen = LmGen(lm, seed=seed, compute=fmt)
    rng = np.random.default_rng(seed)
    user = iter(rng.integers(0, lm.cfg.card, (10 * (warmup + steps) + 100, lm.cfg.user_q)))
    gen.step(next(user))  # position 0 runs inside the first call: keep it out
    if start_full:  # the steady state of a long conversation: every ring slot holds a position
        if not gen.compiled:
            raise SystemExit("--start-full needs the compiled step (--profile gpu)")
        for c in gen._cache:
            c.offset = max(c.offset, lm.cfg.context)
    res = graph_count.measure_steps(lambda: gen.step(next(user)), steps, warmup)
    res.update(
        {
            "compiled": gen.compiled,
            "impl": "ours",
            "variant": f"ours ({fmt.describe()})",
            "profile": profile,
            "load_s": load_s,
            "layers": lm.cfg.num_layers,
            "steps": steps,
            "warmup": warmup,
            "start_full": start_full,
            "unfused_residuals": unfused_residuals,
        }
    )
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"), help="the compiled frame step")
    ap.add_argument("--random", help="SHAPE:LAYERS:FMT: build in memory instead of loading FOLDER")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", default="auto", choices=("auto", "cpu", "gpu"))
    ap.add_argument(
        "--start-full",
        action="store_true",
        help="measure with the context already full (a long conversation's steady state)",
    )
    ap.add_argument(
        "--unfused-residuals",
        action="store_true",
        help="residual adds as their own kernels instead of folded into the matmuls",
    )
    a = ap.parse_args(argv)
    print(
        "RESULT "
        + json.dumps(
            run(
                a.folder,
                a.steps,
                a.warmup,
                a.profile,
                random=a.random,
                compile=a.compile,
                start_full=a.start_full,
                unfused_residuals=a.unfused_residuals,
            )
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
