"""Speech-to-text real-time factor (seconds of audio per second of compute; > 1 is faster
than real time).

    .venv/bin/python -m bench.stt_bench                 # demo end to end + real-width estimates
    .venv/bin/python -m bench.stt_bench --quick         # demo model only

Cases, each in its own process (so peak memory is per case):
- demo: `python -m moshi_mlx.stt FILE`'s path end to end (pipeline: Mimi encoder and LM
  threads, the STT padding, words and VAD bookkeeping) on the random-tiny-stt model: what
  the tooling costs, not a real model's speed;
- stt-1b / stt-2.6b: the published architectures at their real widths (dim 2048, 32
  codebooks in, 16 / 32 heads, the 1B's 4 extra heads) with random bf16 weights, the LM step
  (temporal transformer, text sampling, extra heads) timed with 1 and 2 layers and
  extrapolated per layer to the real depth (16 / 48), in our compute format for this
  backend (`prepare_lm`), greedy; plus the MLX Mimi encoder of the published architecture
  at 32 codebooks per 80 ms frame (random weights; rustymimi is faster on a CPU, see
  bench/mimi_bench.py). The pipeline overlaps encoder and LM, so the real-time factor is
  bounded by the slower of the two ("overlapped") and at worst by their sum ("serial").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.case_cli import case_bench_main, run_cases  # noqa: E402

FRAME_MS = 80.0
REAL = {"stt-1b": ("stt-1b-en_fr", 16), "stt-2.6b": ("stt-2.6b-en", 48)}


def _demo(seconds: float = 20.0) -> dict:
    import numpy as np

    import moshi_mlx
    from moshi_mlx.constants import FRAME_SIZE, SAMPLE_RATE
    from moshi_mlx.runtime.stt_live import PipelineTranscriber

    model = moshi_mlx.load("random-tiny-stt", seed=1)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pcm = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    results = []
    for _ in range(2):  # the first run warms up
        tr = PipelineTranscriber(model).start()
        t0 = time.perf_counter()
        for i in range(0, len(pcm), FRAME_SIZE):
            tr.push(pcm[i : i + FRAME_SIZE], wait=True)
        tr.finish()
        tr.drain()
        results.append((time.perf_counter() - t0, tr.pipe.stats.frames_stepped))
    wall, steps = results[-1]
    return {
        "audio_s": seconds,
        "wall_s": wall,
        "steps": steps,
        "real_time_factor": seconds / wall,
        "ms_per_step": 1000 * wall / steps,
    }


def _lm_step_ms(preset_name: str, layers: int, steps: int) -> float:
    import mlx.core as mx
    import numpy as np

    from moshi_mlx.models import LmConfig, lm_preset
    from moshi_mlx.models.backend import prepare_lm
    from moshi_mlx.runtime.stt import HeadsGen, make_stt_gen
    from moshi_mlx.weights.random_state import random_lm

    d = lm_preset(preset_name).to_dict()
    d.update(num_layers=layers)
    cfg = LmConfig.from_dict(d)
    lm = random_lm(cfg, seed=0, dtype=mx.bfloat16)
    gen = HeadsGen(make_stt_gen(lm, compute=prepare_lm(lm)))
    codes = np.random.default_rng(0).integers(0, cfg.card, (steps + 5, cfg.user_q))
    times = []
    for i in range(steps + 5):
        t = time.perf_counter()
        gen.step(codes[i])
        if i >= 5:
            times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * times[len(times) // 2]


def _mimi_encode_ms(frames: int) -> float:
    import numpy as np

    from moshi_mlx.models import random_mimi
    from moshi_mlx.runtime.codec import MimiFrameCodec

    codec = MimiFrameCodec(random_mimi(seed=0, num_codebooks=32), n_encode=32)
    x = (0.1 * np.random.default_rng(0).standard_normal(1920 * (frames + 3))).astype(np.float32)
    times = []
    for i in range(frames + 3):
        t = time.perf_counter()
        codec.encode_step(x[i * 1920 : (i + 1) * 1920])
        if i >= 3:
            times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * times[len(times) // 2]


def _real_width(case: str, steps: int) -> dict:
    name, depth = REAL[case]
    one, two = _lm_step_ms(name, 1, steps), _lm_step_ms(name, 2, steps)
    per_layer = two - one
    enc_ms = _mimi_encode_ms(min(steps, 20))
    if per_layer <= 0:  # another job took the cores during the 1-layer run: nothing to extrapolate
        return {
            "measured_ms": {"1_layer": one, "2_layers": two},
            "per_layer_ms": per_layer,
            "layers": depth,
            "mimi_encode_ms": enc_ms,
            "noisy": True,
        }
    lm_ms = one + (depth - 1) * per_layer
    return {
        "measured_ms": {"1_layer": one, "2_layers": two},
        "per_layer_ms": per_layer,
        "extrapolated_ms_per_step": lm_ms,
        "layers": depth,
        "mimi_encode_ms": enc_ms,
        "real_time_factor": FRAME_MS / lm_ms,
        "real_time_factor_overlapped": FRAME_MS / max(lm_ms, enc_ms),
        "real_time_factor_serial": FRAME_MS / (lm_ms + enc_ms),
    }


def _child(case: str, steps: int) -> dict:
    import mlx.core as mx

    from bench.proc_memory import peak_rss_mb

    cpu0, wall0 = time.process_time(), time.perf_counter()
    res = _demo() if case == "demo" else _real_width(case, steps)
    # CPU time of this process per second of wall time: < 1 core means other jobs took the cores
    res["cores_used"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    res["peak_rss_mb"] = peak_rss_mb()
    res["device"] = str(mx.default_device())
    return res


def run(quick: bool = False, steps: int = 30) -> dict:
    """Each case in a child process; returns {"cases": {name: result}}."""
    cases = ["demo"] if quick else ["demo", *REAL]
    return {
        "what": "speech-to-text real-time factor on this machine's default device",
        "cases": run_cases("bench.stt_bench", cases, steps),
    }


def format_table(res: dict) -> str:
    lines = [
        "| case | LM ms per 80 ms step | Mimi encode ms | real-time factor | peak RSS MB | cores used |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in res["cases"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | |")
        elif r.get("noisy"):
            lines.append(
                f"| {name} | noisy: 1 layer {r['measured_ms']['1_layer']:.0f} ms, 2 layers "
                f"{r['measured_ms']['2_layers']:.0f} ms | {r['mimi_encode_ms']:.1f} | | {r['peak_rss_mb']:.0f} | "
                f"{r.get('cores_used', 0):.2f} |"
            )
        elif name == "demo":
            lines.append(
                f"| demo (random-tiny-stt, end to end) | {r['ms_per_step']:.2f} (all) | | "
                f"{r['real_time_factor']:.1f}x | {r['peak_rss_mb']:.0f} | {r.get('cores_used', 0):.2f} |"
            )
        else:
            lines.append(
                f"| {name} (real widths, {r['layers']} layers extrapolated) | "
                f"{r['extrapolated_ms_per_step']:.1f} | {r['mimi_encode_ms']:.1f} | "
                f"{r['real_time_factor']:.2f}x LM only, {r['real_time_factor_overlapped']:.2f}x overlapped, "
                f"{r['real_time_factor_serial']:.2f}x serial | {r['peak_rss_mb']:.0f} | "
                f"{r.get('cores_used', 0):.2f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    case_bench_main(__doc__, run, _child, format_table, argv)


if __name__ == "__main__":
    main()
