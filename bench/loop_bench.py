"""The live loop on the simulated sound card: per-frame latency and the overhead beyond
model compute.

    .venv/bin/python -m bench.loop_bench [--seconds 20] [--codec rustymimi,mlx]

`DuplexPipeline` (encoder, LM and decoder workers) is driven by `SimulatedAudioDevice` at
real-time pace (one 80 ms capture and one playback callback every 80 ms). The codec is Mimi
with the published architecture (seeded random weights); the LM is the random-tiny demo
model, whose step takes a few ms, so that the loop keeps real time on this CPU and what is
measured is the pipeline itself (the LM step at real sizes is the LM part of the suite).

Definitions (per output frame f, i.e. the answer to input frame f):
- latency = the moment the frame's answer is ready for playback (appended to the output
  queue) - the moment the input frame's last sample was handed to the pipeline;
- compute = encode(f) + LM step(f) + decode(answer), each the wall time of that call inside
  its worker;
- overhead = latency - compute: queueing, thread hand-offs, resampling/re-framing, Python
  glue. (On a busy 2-core machine a call's wall time also includes waiting for a core.)
- frame-to-frame: the interval between successive answers becoming ready (80 ms ideal);
- playback delay: capture -> start of playback (the pipeline's own measure), which adds the
  wait for the next playback callback (up to one 80 ms period) to the latency.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stats  # noqa: E402
from bench.mimi_bench import test_signal  # noqa: E402


class TimedCodec:
    def __init__(self, codec):
        self.codec = codec
        self.enc: list[float] = []
        self.dec: list[float] = []
        self.frame_size = codec.frame_size

    def encode_step(self, frame):
        t = time.perf_counter()
        out = self.codec.encode_step(frame)
        self.enc.append((time.perf_counter() - t) * 1e3)
        return out

    def decode_step(self, codes):
        t = time.perf_counter()
        out = self.codec.decode_step(codes)
        self.dec.append((time.perf_counter() - t) * 1e3)
        return out

    def reset(self):
        self.codec.reset()


class TimedGen:
    def __init__(self, gen):
        self.gen = gen
        self.steps: list[float] = []

    def step(self, codes):
        t = time.perf_counter()
        out = self.gen.step(codes)
        self.steps.append((time.perf_counter() - t) * 1e3)
        return out

    def reset(self):
        self.gen.reset()


class TimedDeque(collections.deque):
    """The pipeline's output queue, noting when each answer frame was appended."""

    def __init__(self):
        super().__init__()
        self.ready: list[tuple[int, float, float]] = []  # (input frame, t_capture, t_ready)

    def append(self, item):
        self.ready.append((item.frame, item.t_capture, time.monotonic()))
        super().append(item)


def _codec(kind: str, weights: Path, n_user: int, n_out: int):
    from moshi_mlx.models import load_mimi
    from moshi_mlx.runtime.codec import MimiFrameCodec

    if kind == "rustymimi":
        enc = load_mimi(weights, num_codebooks=n_user, backend="rustymimi")
        dec = load_mimi(weights, num_codebooks=n_out, backend="rustymimi")
        return MimiFrameCodec(enc, dec, n_encode=n_user)
    mimi = load_mimi(weights, num_codebooks=max(n_user, n_out))
    return MimiFrameCodec(mimi, n_encode=n_user)


def run_one(
    codec_kind: str, weights: Path, seconds: float, seed: int = 0, warmup_frames: int = 12, lm_spec: str | None = None
) -> dict:
    """lm_spec: None for the random-tiny demo LM, or SHAPE:LAYERS:FMT for a model of that
    shape built in memory (bench/overhead_ours.py), e.g. 7b:32:q4 on a GPU."""
    from moshi_mlx.models import LmConfig, LmGen, lm_preset, random_lm
    from moshi_mlx.models.backend import prepare_lm
    from moshi_mlx.runtime.pipeline import FRAME_SIZE, DuplexPipeline
    from moshi_mlx.runtime.sim_device import SimulatedAudioDevice

    if lm_spec:
        from bench.overhead_ours import random_model

        lm = random_model(lm_spec)
        cfg = lm.cfg
    else:
        d = lm_preset("random-tiny").to_dict()
        d["card"] = 2048  # Mimi's codebook size (the demo pairs random-tiny with a tiny codec)
        cfg = LmConfig.from_dict(d)
        lm = random_lm(cfg, seed=seed)
    gen = TimedGen(LmGen(lm, seed=seed, compute=prepare_lm(lm)))
    codec = TimedCodec(_codec(codec_kind, weights, cfg.user_q, cfg.dep_q))
    # warm both paths up outside the measurement (first calls compile/allocate)
    for _ in range(3):
        codes = codec.codec.encode_step(np.zeros(FRAME_SIZE, np.float32))
        gen.gen.step(codes[: cfg.user_q])
        codec.codec.decode_step(np.zeros(cfg.dep_q, np.int32))
    codec.codec.reset()
    gen.gen.reset()
    pipe = DuplexPipeline(codec, gen, cfg.user_q, max_lag_ms=None)
    pipe.output = TimedDeque()
    n_blocks = int(round(seconds / (FRAME_SIZE / 24000)))
    device = SimulatedAudioDevice(test_signal(n_blocks, seed), sample_rate=24000, block=FRAME_SIZE, loop=False)
    load0 = os.getloadavg()
    pipe.start()
    t0 = time.monotonic()
    device.run(pipe, n_blocks, keep_output=False)
    pipe.close_input()
    pipe.finished.wait(30)
    pipe.stop()
    wall = time.monotonic() - t0
    if pipe.error is not None:
        raise pipe.error
    ready = pipe.output.ready
    rows = []
    for j, (frame, t_cap, t_ready) in enumerate(ready):
        if frame < warmup_frames or frame >= len(codec.enc) or frame >= len(gen.steps) or j >= len(codec.dec):
            continue
        latency = (t_ready - t_cap) * 1e3
        compute = codec.enc[frame] + gen.steps[frame] + codec.dec[j]
        rows.append((latency, compute, codec.enc[frame], gen.steps[frame], codec.dec[j], t_ready))
    a = np.array(rows)
    intervals = np.diff(a[:, 5]) * 1e3 if len(a) > 1 else np.array([])
    summ = pipe.stats.summary()
    return {
        "codec": codec_kind,
        "lm": lm_spec or "random-tiny (demo model) with card 2048",
        "seconds": seconds,
        "frames": len(rows),
        "wall_s": wall,
        "loadavg": [load0, os.getloadavg()],
        "latency_ms": stats.summary(a[:, 0]),
        "compute_ms": stats.summary(a[:, 1]),
        "overhead_ms": stats.summary(a[:, 0] - a[:, 1]),
        "encode_ms": stats.summary(a[:, 2]),
        "step_ms": stats.summary(a[:, 3]),
        "decode_ms": stats.summary(a[:, 4]),
        "codec_path_ms": stats.summary(a[:, 2] + a[:, 4]),
        "frame_to_frame_ms": stats.summary(intervals),
        "playback_delay_ms": {"median": summ["delay_ms_median"], "p90": summ["delay_ms_p90"]},
        "underruns": summ["underruns"],
        "frames_skipped": summ["frames_skipped"],
        "input_overflows": summ["input_overflows"],
        # the first answers (excluded above): one later than a period leaves a frame queued
        # for good, i.e. one more period of playback delay
        "startup_latency_ms": [round((t_ready - t_cap) * 1e3, 1) for _, t_cap, t_ready in ready[:6]],
    }


def run(
    codecs=("rustymimi", "mlx"), seconds: float = 20.0, seed: int = 0, log=print, lm_spec: str | None = None
) -> dict:
    import mlx.core as mx

    from moshi_mlx.weights.mimi_keys import random_published_weights
    from moshi_mlx.weights.safetensors_io import save_safetensors
    from moshi_mlx.models.mimi_config import mimi_202407

    results, errors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "mimi_random.safetensors"
        published = random_published_weights(mimi_202407(), seed=seed, codebook_scale=1.0)
        save_safetensors(weights, {k: mx.array(v) for k, v in published.items()})
        del published
        for kind in codecs:
            try:
                log(f"[loop] {kind}: {seconds:.0f} s of real-time audio ...")
                r = run_one(kind, weights, seconds, seed, lm_spec=lm_spec)
                results[kind] = r
                log(
                    f"[loop]   latency {r['latency_ms']['median']:.1f} ms (compute {r['compute_ms']['median']:.1f}, "
                    f"overhead {r['overhead_ms']['median']:.2f}), frame-to-frame p90 {r['frame_to_frame_ms']['p90']:.1f}"
                )
            except ImportError as e:
                errors[kind] = f"not installed ({e})"
    return {
        "what": "live loop on the simulated device (real-time pace), per 80 ms frame",
        "results": results,
        "errors": errors,
    }


def format_table(loop: dict) -> str:
    rows = [
        "| codec | latency median | p90 | compute (enc + LM + dec) | overhead median | p90 | codec path | "
        "frame-to-frame median / p90 | playback delay | underruns |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in loop["results"].items():
        rows.append(
            f"| {name} | {r['latency_ms']['median']:.1f} | {r['latency_ms']['p90']:.1f} | "
            f"{r['compute_ms']['median']:.1f} ({r['encode_ms']['median']:.1f} + {r['step_ms']['median']:.1f} + "
            f"{r['decode_ms']['median']:.1f}) | {r['overhead_ms']['median']:.2f} | {r['overhead_ms']['p90']:.2f} | "
            f"{r['codec_path_ms']['median']:.1f} | {r['frame_to_frame_ms']['median']:.1f} / "
            f"{r['frame_to_frame_ms']['p90']:.1f} | {r['playback_delay_ms']['median']:.0f} | {r['underruns']} |"
        )
    for name, err in loop["errors"].items():
        rows.append(f"| {name} | skipped: {err} |||||||||")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--codec", default="rustymimi,mlx")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    res = run(a.codec.split(","), a.seconds)
    print(format_table(res))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
