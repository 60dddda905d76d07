"""Hibiki-Zero file translation, real-time factor on this machine: `Model.respond` (the one
pipeline: Mimi encoder, LM, Mimi decoder overlapping) on a 1-temporal-layer Hibiki-Zero-shaped
q4 model (random weights, the real Mimi architecture with random weights: the output is
noise), extrapolated to the 28 layers with the per-layer step time bench/lm_bench.py measured.

    .venv/bin/python -m bench.translate_bench [--audio FILE] [--seconds 2] [--lm-json F]

The extrapolation assumes the LM thread is the bottleneck (on a CPU it is: Mimi runs beside
it): wall(28) = wall(1) + frames x 27 x t_layer. --lm-json: lm_bench's --json output holding
the 3b-zero q4 row (without it, only the 1-layer figures). --audio: the package's demo clip
(moshi_mlx.demo_clip()) by default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lm_weights import DEFAULT_CACHE, Case, prepare, shaped_config  # noqa: E402


def main(argv=None) -> dict:
    import moshi_mlx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio", default=moshi_mlx.demo_clip(), help="audio file to translate (default: the demo clip)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of the file translated")
    ap.add_argument(
        "--tail-frames",
        type=int,
        default=16,
        help="silence after the marker (random weights never write EOS: the real model stops there)",
    )
    ap.add_argument("--fmt", default="q4")
    ap.add_argument("--lm-json", type=Path, help="lm_bench --json output with the 3b-zero row (its t_layer)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args(argv)

    from moshi_mlx.audio.io import read_audio
    from moshi_mlx.constants import FRAME_SECONDS, SAMPLE_RATE

    case = Case("3b-zero", 1, args.fmt)
    folder = prepare(case, args.cache_dir)
    d = shaped_config("3b-zero", 1).to_dict()
    d["model_type"] = "hibiki"  # the translation framing: marker, EOS, cut
    from moshi_mlx.models.config import LmConfig

    model = moshi_mlx.load(str(folder), config=LmConfig.from_dict(d), mimi="random", tokenizer="none")
    assert model.translates
    pcm = read_audio(args.audio).reshape(-1)[: int(args.seconds * SAMPLE_RATE)]
    from moshi_mlx.runtime import translation

    # the one rule a file ends by (translation.input_end) reads this at every respond()
    translation.TRANSLATION_TAIL_FRAMES = args.tail_frames
    with model.conversation() as conv:  # warm-up: the first steps compile
        conv.feed(pcm[: 3 * 1920])
    t0 = time.perf_counter()
    res = model.respond(pcm, sample_rate=SAMPLE_RATE)
    wall = time.perf_counter() - t0
    audio_s = len(pcm) / SAMPLE_RATE
    t_layer = None
    if args.lm_json and args.lm_json.exists():
        for r in json.loads(args.lm_json.read_text())["lm"]["results"]:
            if r.get("shape") == "3b-zero" and r.get("fmt") == args.fmt and r.get("impl") == "ours" and "layer_ms" in r:
                t_layer = r["layer_ms"]["median"] / 1000.0
    out = {
        "audio_s": audio_s,
        "tail_frames": args.tail_frames,
        "frames_stepped": res.frames,
        "wall_s_1_layer": wall,
        "rtf_1_layer": audio_s / wall,
        "step_s_per_frame_1_layer": wall / res.frames,
    }
    if t_layer is not None:
        full = wall + res.frames * 27 * t_layer
        out.update(
            t_layer_ms=t_layer * 1000,
            wall_s_28_layers_est=full,
            rtf_28_layers_est=audio_s / full,
            step_s_per_frame_28_layers_est=full / res.frames,
            frame_budget_ms=FRAME_SECONDS * 1000,
        )
    out["load_average"] = __import__("os").getloadavg()
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
