"""Long-run soak of the full pipeline with the offline demo model (random-tiny).

Drives `DuplexPipeline` with N frames (45,000 = one hour of audio) as fast as it goes,
through the real encoder -> LM -> decoder workers, and samples resident memory every
`--every` frames. Reports frames/s (must beat real time: 12.5 frames/s) and the RSS growth
after warm-up, which must stay under 5%.

    .venv/bin/python bench/soak.py --frames 45000 --json bench/results/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proc_memory import rss_mb  # noqa: E402


def soak(frames: int, every: int = 1000, warmup: int = 1000, seed: int = 0) -> dict:
    from moshi_mlx.cli.model_args import load_session, sampling_options
    from moshi_mlx.runtime.pipeline import FRAME_SIZE, DuplexPipeline

    ns = argparse.Namespace(
        model="random-tiny",
        seed=seed,
        temp=None,
        temp_text=None,
        top_k=None,
        top_k_text=None,
        top_p=None,
        top_p_text=None,
        cfg_coef=None,
    )
    session = load_session(ns)
    gen = session.generator(sampling_options(ns))
    pipe = DuplexPipeline(session.codec, gen, session.n_user, max_lag_ms=None).start()
    rng = np.random.default_rng(seed)
    noise = (rng.standard_normal(FRAME_SIZE * 16) * 0.1).astype(np.float32)
    samples: list[tuple[int, float]] = []
    played = 0
    t0 = time.perf_counter()
    for i in range(frames):
        k = i % 16
        pipe.push_input(noise[k * FRAME_SIZE : (k + 1) * FRAME_SIZE], wait=True)
        # consume output as a sound card would, so nothing accumulates
        while pipe.output:
            pipe.output.popleft()
            played += 1
        while i + 1 - pipe.stats.frames_stepped > 8:  # bounded in-flight work (all queues)
            pipe.wait_output(0.05)
            while pipe.output:
                pipe.output.popleft()
                played += 1
        if (i + 1) % every == 0:
            samples.append((i + 1, rss_mb()))
            if pipe.failed.is_set():
                break
    pipe.close_input()
    pipe.finished.wait(60)
    pipe.stop()
    if pipe.error is not None:
        raise pipe.error
    wall = time.perf_counter() - t0
    after = [m for n, m in samples if n >= warmup]
    base = after[0] if after else float("nan")
    growth = (max(after) - base) / base * 100 if after else float("nan")
    return {
        "frames": frames,
        "steps": pipe.stats.frames_stepped,
        "audio_hours": frames * 0.08 / 3600,
        "wall_s": wall,
        "frames_per_s": frames / wall,
        "real_time_factor": frames * 0.08 / wall,
        "rss_mb_after_warmup": base,
        "rss_mb_max": max(after) if after else float("nan"),
        "rss_growth_pct_after_warmup": growth,
        "rss_samples": samples,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=45_000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    # growth is measured between the memory samples (every --every frames) taken after warm-up: two at least
    if args.every < 1 or len([n for n in range(args.every, args.frames + 1, args.every) if n >= args.warmup]) < 2:
        ap.error(
            f"--frames {args.frames} leaves fewer than 2 memory samples after --warmup {args.warmup} (one every {args.every})"
        )
    res = soak(args.frames, args.every, args.warmup)
    summary = {k: v for k, v in res.items() if k != "rss_samples"}
    print(json.dumps(summary, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    ok = res["real_time_factor"] > 1.0 and res["rss_growth_pct_after_warmup"] < 5.0
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
