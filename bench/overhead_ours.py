"""One case of bench/step_overhead.py, ours, in its own process:

    .venv/bin/python -m bench.overhead_ours FOLDER [--steps 30] [--warmup 5] [--profile auto|cpu|gpu]

Loads the folder, prepares it (`models.backend.prepare_lm`; `--profile gpu` applies the
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


def run(folder: str, steps: int, warmup: int, profile: str, seed: int = 0) -> dict:
    from moshi_mlx.models import LmGen, load_lm
    from moshi_mlx.models.backend import prepare_lm

    t0 = time.perf_counter()
    lm = load_lm(folder, compute="stored")  # its compute format is set just below
    fmt = prepare_lm(lm, profile=profile)
    load_s = time.perf_counter() - t0
    gen = LmGen(lm, seed=seed)
    rng = np.random.default_rng(seed)
    user = iter(rng.integers(0, lm.cfg.card, (10 * (warmup + steps) + 100, lm.cfg.user_q)))
    gen.step(next(user))  # position 0 runs inside the first call: keep it out
    res = graph_count.measure_steps(lambda: gen.step(next(user)), steps, warmup)
    res.update({"impl": "ours", "variant": f"ours ({fmt.describe()})", "profile": profile, "load_s": load_s,
                "layers": lm.cfg.num_layers, "steps": steps, "warmup": warmup})
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", default="auto", choices=("auto", "cpu", "gpu"))
    a = ap.parse_args(argv)
    print("RESULT " + json.dumps(run(a.folder, a.steps, a.warmup, a.profile)), flush=True)


if __name__ == "__main__":
    main()
