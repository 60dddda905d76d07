"""TTS real-time factor (seconds of audio per second of compute; > 1 is faster than real time).

    .venv/bin/python -m bench.tts_bench                 # demo model end to end + real-width estimate
    .venv/bin/python -m bench.tts_bench --quick         # demo model only

Cases, each in its own process (so peak memory is per case):
- demo: `python -m moshi_mlx.tts`'s path end to end (state machine, LM, tiny Mimi decoding)
  on the tts-tiny random model: what the tooling costs, not a real model's speed;
- real-width: the tts-1.6b-en_fr architecture at its real widths (dim 2048, 32 codebooks,
  cross-attention to 5 x 125 speaker positions, depformer 1024 with 32 scheduled steps) with
  random bf16 weights, in our compute format (`prepare_lm`), greedy: the temporal
  transformer and the depformer are timed separately (medians) with 1 and with 2 layers
  each, and extrapolated per layer to the real depth (16 + 4). LM only: Mimi decoding at 32
  codebooks adds its own cost (bench/mimi_bench.py: rustymimi on this CPU). When other
  load swamps the one-layer difference the result says `noisy`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.case_cli import case_bench_main, run_cases  # noqa: E402
from moshi_mlx.constants import FRAME_SECONDS  # noqa: E402

TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the sun while the birds keep singing."
)


def _demo() -> dict:
    from moshi_mlx.runtime.tts import load_tts_session, load_voice, synthesize

    s = load_tts_session(model="tts-tiny", seed=1)
    voice = load_voice("random", s.cfg, seed=1)
    synthesize(s, "warm up", [voice], lambda pcm: None, temp=0.0)
    r = synthesize(s, TEXT, [voice], lambda pcm: None, temp=0.0, seed=1)
    return {
        "audio_s": r.seconds,
        "wall_s": r.wall_s,
        "steps": r.steps,
        "real_time_factor": r.real_time_factor,
        "ms_per_step": 1000 * r.wall_s / r.steps,
    }


def _component_ms(layers: int, steps: int) -> tuple[float, float]:
    """Median ms of the temporal transformer (with cross-attention) and of the depformer's
    32 steps, for the real widths with `layers` temporal and depformer layers."""
    import mlx.core as mx
    import numpy as np

    from moshi_mlx.models import LmConfig, lm_preset
    from moshi_mlx.models.backend import prepare_lm
    from moshi_mlx.models.tts import TtsGen, TtsSettings
    from moshi_mlx.weights.random_state import random_lm

    d = lm_preset("tts-1.6b-en_fr").to_dict()
    d.update(num_layers=layers, depformer_num_layers=layers)
    cfg = LmConfig.from_dict(d)
    lm = random_lm(cfg, seed=0, dtype=mx.bfloat16)
    fmt = prepare_lm(lm)
    voice = np.random.default_rng(0).standard_normal((512, 125), dtype=np.float32)
    gen = TtsGen(lm, TtsSettings(delay_steps=0, second_stream_ahead=2), [voice], cfg_coef=2.0, temp=0.0, compute=fmt)
    cache = lm.make_cache()
    rng = np.random.default_rng(1)
    temporal, depformer = [], []
    for i in range(steps + 3):
        tokens = np.concatenate([[rng.integers(0, 8000)], rng.integers(0, 2048, cfg.n_q)]).astype(np.int32)
        t0 = time.perf_counter()
        h, logits = lm.forward_text(mx.array(tokens)[None, :, None], gen._cond, cache, gen._cross, dtype=gen.act)
        mx.eval(h, logits)
        t1 = time.perf_counter()
        gen._depformer(h, int(tokens[0]), iter(()))
        t2 = time.perf_counter()
        if i >= 3:  # warm-up
            temporal.append(t1 - t0)
            depformer.append(t2 - t1)
    return 1000 * float(np.median(temporal)), 1000 * float(np.median(depformer))


def _real_width(steps: int) -> dict:
    (t1, d1), (t2, d2) = _component_ms(1, steps), _component_ms(2, steps)
    per_t, per_d = t2 - t1, d2 - d1
    full = t1 + 15 * max(per_t, 0.0) + d1 + 3 * max(per_d, 0.0)
    return {
        "temporal_ms": {"1": t1, "2": t2},
        "depformer_ms": {"1": d1, "2": d2},
        "per_temporal_layer_ms": per_t,
        "per_depformer_layer_ms": per_d,
        "noisy": per_t <= 0 or per_d <= 0,  # another load on the machine swamped the difference
        "extrapolated_ms_per_step": full,
        "real_time_factor": 1000 * FRAME_SECONDS / full,
    }


def _child(case: str, steps: int) -> dict:
    from bench.proc_memory import peak_rss_mb

    res = _demo() if case == "demo" else _real_width(steps)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def run(quick: bool = False, steps: int = 30) -> dict:
    """Each case in a child process; returns {"cases": {name: result}}."""
    cases = ["demo"] if quick else ["demo", "real-width"]
    return {
        "what": "TTS real-time factor on this machine's default device",
        "cases": run_cases("bench.tts_bench", cases, steps),
    }


def format_table(res: dict) -> str:
    lines = ["| case | ms per 80 ms step | real-time factor | peak RSS MB |", "|---|---|---|---|"]
    for name, r in res["cases"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | |")
            continue
        ms = r.get("ms_per_step", r.get("extrapolated_ms_per_step"))
        note = " (extrapolated to 16 + 4 layers, LM only)" if name == "real-width" else " (end to end)"
        if r.get("noisy"):
            note += " NOISY: a per-layer difference came out <= 0"
        lines.append(f"| {name}{note} | {ms:.1f} | {r['real_time_factor']:.2f}x | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    case_bench_main(__doc__, run, _child, format_table, argv)


if __name__ == "__main__":
    main()
