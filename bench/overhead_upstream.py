"""One case of bench/step_overhead.py with upstream's `moshi_mlx` 0.3.0, in a process whose
path holds upstream's package (not ours):

    PYTHONPATH=UPSTREAM_DIR python bench/overhead_upstream.py FOLDER [--steps 30] [--warmup 5]
        [--random BITS:GROUP | --random bf16]

Builds upstream's model the way bench/upstream_lm.py does (its bf16 recipe, as shipped),
or, with --random, from FOLDER/bench_config.json alone with MLX's default random init,
bf16, quantized by `nn.quantize` (no weights file),
then measures `LmGen.step` with the reference sampling plus the evaluation of the step's
tokens (bench/graph_count.py). Prints one line `RESULT {json}`.
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
import graph_count  # noqa: E402
import upstream_lm  # noqa: E402  (imports upstream's package: this process must not see ours)

from moshi_mlx import models, utils  # noqa: E402


def random_model(folder: Path, spec: str):
    import mlx.nn as nn

    cfg = models.LmConfig.from_config_dict(json.loads((folder / "bench_config.json").read_text()))
    model = models.Lm(cfg)
    model.set_dtype(mx.bfloat16)
    if spec != "bf16":
        bits, group = (int(x) for x in spec.split(":"))
        nn.quantize(model, group_size=group, bits=bits)
    mx.eval(model.parameters())
    return cfg, model


def run(folder: str, steps: int, warmup: int, seed: int = 0, random: str | None = None) -> dict:
    t0 = time.perf_counter()
    if random:
        cfg, model = random_model(Path(folder), random)
    else:
        cfg, model, _ = upstream_lm.build(Path(folder), "recipe")
    load_s = time.perf_counter() - t0
    total = 10 * (warmup + steps) + 100
    gen = models.LmGen(
        model=model,
        max_steps=total,
        text_sampler=utils.Sampler(top_k=25, temp=0.7),
        audio_sampler=utils.Sampler(top_k=250, temp=0.8),
    )
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    user = iter(rng.integers(0, cfg.audio_vocab_size - 1, (total, cfg.other_codebooks)))

    def step():
        text, _ = gen.step(mx.array(next(user)[None], dtype=mx.int32))
        mx.eval(text, gen.gen_sequence)  # the step's text and audio tokens
        text.item()

    step()
    res = graph_count.measure_steps(step, steps, warmup)
    res.update(
        {
            "impl": "upstream",
            "variant": "upstream moshi_mlx 0.3.0 (its recipe: bf16 activations)",
            "load_s": load_s,
            "layers": cfg.transformer.num_layers,
            "steps": steps,
            "warmup": warmup,
        }
    )
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--random", help="bf16 or BITS:GROUP: build from FOLDER/bench_config.json in memory")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args(argv)
    print("RESULT " + json.dumps(run(a.folder, a.steps, a.warmup, random=a.random)), flush=True)


if __name__ == "__main__":
    main()
