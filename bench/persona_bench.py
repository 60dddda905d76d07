"""PersonaPlex: the system prompt's prefill against stepping it frame by frame, and the
conversation step against Moshi's (docs/personaplex.md has the figures).

    .venv/bin/python -m bench.persona_bench [--dim 2048 --layers 4 --dep-layers 1] [--voice-s 10] [--tokens 50]

Random weights in PersonaPlex's architecture at the widths given (the real model is dim 4096,
32 layers, depformer 6 layers: too large for a CPU benchmark beside other work); float32.
The prompt: a voice of `--voice-s` seconds (12.5 frames/s), 6 silent frames, `--tokens`
role tokens, 6 silent frames, exactly as `models.persona.build_prompt` lays them out.
- prefill, 128 positions per call (`LmGen.prefill`'s default on a GPU);
- prefill, one position per call (its default on a CPU, where MLX's multi-row matmuls are
  slower than as many one-row ones);
- stepping: one full frame step per prompt frame (temporal, text head, 8-slice depformer,
  sampling: what NVIDIA's `step_system_prompts` runs for every frame);
- conversation step: `LmGen.step`, PersonaPlex vs Moshi of the same widths (the same
  8 depformer slices run: the user's 8 slices are not loaded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moshi_mlx.models.config import LmConfig, preset  # noqa: E402
from moshi_mlx.models.generate import LmGen  # noqa: E402
from moshi_mlx.models.persona import Voice, build_prompt  # noqa: E402
from moshi_mlx.weights.random_state import random_lm  # noqa: E402


def shaped(name: str, dim: int, layers: int, dep_layers: int) -> LmConfig:
    d = preset(name).to_dict()
    d.update(dim=dim, num_heads=dim // 128, num_layers=layers, depformer_num_layers=dep_layers)
    return LmConfig.from_dict(d)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dep-layers", type=int, default=1)
    ap.add_argument("--voice-s", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30, help="conversation steps timed per model")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    cfg = shaped("personaplex-7b", args.dim, args.layers, args.dep_layers)
    lm = random_lm(cfg, seed=1)
    rng = np.random.default_rng(0)
    voice = Voice("bench", codes=rng.integers(0, cfg.card, (8, int(round(args.voice_s * 12.5)))))
    prompt = build_prompt(cfg, voice, [int(t) for t in rng.integers(4, cfg.text_card, args.tokens)])
    T = prompt.frames.shape[1]
    print(
        f"PersonaPlex-shaped: dim {cfg.dim}, {cfg.num_layers} layers, depformer {cfg.depformer_num_layers} "
        f"layer(s), float32; prompt: {voice.steps} voice frames + 6 + {args.tokens} tokens + 6 = {T} positions"
    )

    gen = LmGen(lm, use_sampling=False)
    gen.step(np.zeros(8))  # warm up kernels

    def prefill(chunk: int):
        gen.reset()
        gen.prefill(prompt.frames, chunk=chunk)

    def stepping():  # a full frame step per prompt position (temporal, text head, depformer)
        gen.reset()
        for t in range(T):
            gen.step(prompt.frames[9:, t])

    fast = min(timed(lambda: prefill(128), args.repeat))
    one = min(timed(lambda: prefill(1), args.repeat))
    full = min(timed(stepping, 1))
    print(
        f"prefill {fast * 1000:.0f} ms | one position per call {one * 1000:.0f} ms ({fast / one:.2f}x) | "
        f"full frame steps {full * 1000:.0f} ms ({fast / full:.2f}x)"
    )

    def step_ms(model_lm) -> float:
        g = LmGen(model_lm, use_sampling=True, seed=3)
        for _ in range(5):
            g.step(np.zeros(8))
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            g.step(rng.integers(0, cfg.card, 8))
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)

    persona_ms = step_ms(lm)
    del lm, gen
    moshi = random_lm(shaped("moshiko", args.dim, args.layers, args.dep_layers), seed=1)
    moshi_ms = step_ms(moshi)
    print(f"conversation step (median of {args.steps}): PersonaPlex {persona_ms:.1f} ms, Moshi {moshi_ms:.1f} ms")
    mx.clear_cache()


if __name__ == "__main__":
    main()
