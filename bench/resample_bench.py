"""The streaming resampler's cost per 80 ms of audio (`audio/resample.py`).

The live loop resamples the microphone to 24 kHz on the encoder thread, what was played into
the echo canceller's reference, and Moshi's voice to the output device's rate: at 48 kHz,
three resamplers per 80 ms frame. This times `Resampler.process` on 80 ms chunks as it is
(inputs and table rows sliced) and as it was (`gather_produce`: an index per output and tap,
clipped and masked, and a table row gathered per output; also the tests' oracle), checks
that both give the same samples to the bit, and prints the ratio (median of repeats).

    python -m bench.resample_bench [--rates 48000:24000,44100:24000,24000:48000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from moshi_mlx.audio.resample import _BLOCK, Resampler


def gather_produce(r: Resampler, n_end: int) -> np.ndarray:
    """`Resampler._produce` before it sliced: index arithmetic per (output, tap)."""
    table, taps = r._table, r._table.shape[1]
    chunks = []
    step = max(1, _BLOCK // taps)
    for n0 in range(r._next, n_end, step):
        n = np.arange(n0, min(n0 + step, n_end), dtype=np.int64)
        k0 = r._newest_input(n)
        phase = (n * r.down + r._half) % r.up
        idx = k0[:, None] - np.arange(taps)[None, :] - r._base
        size = r._buf.shape[0]
        if size == 0:
            x = np.zeros(idx.shape, np.float32)
        else:
            x = r._buf[np.clip(idx, 0, size - 1)]
            x[(idx < 0) | (idx >= size)] = 0.0
        chunks.append(np.einsum("nt,nt->n", x, table[phase]).astype(np.float32))
    r._next = n_end
    r._drop_used_inputs()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class GatherResampler(Resampler):
    """The resampler with its former `_produce`."""

    def _produce(self, n_end: int) -> np.ndarray:
        return gather_produce(self, n_end)


def _time(cls, sr_in: int, sr_out: int, chunk: np.ndarray, frames: int) -> tuple[float, np.ndarray]:
    r = cls(sr_in, sr_out)
    r.process(chunk)  # the first call fills the filter's history
    outs = []
    t = time.perf_counter()
    for _ in range(frames):
        outs.append(r.process(chunk))
    return (time.perf_counter() - t) / frames * 1e6, np.concatenate(outs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="48000:24000,44100:24000,24000:48000,24000:44100,16000:24000")
    ap.add_argument("--frames", type=int, default=25, help="80 ms chunks per timing")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| rates | as it is, us per 80 ms | as it was | ratio | same samples |")
    print("|---|---|---|---|---|")
    for pair in a.rates.split(","):
        sr_in, sr_out = (int(v) for v in pair.split(":"))
        chunk = rng.standard_normal(sr_in * 8 // 100).astype(np.float32)
        now, was, same = [], [], True
        for _ in range(a.repeats):  # interleaved, so that the machine's load falls on both
            t_now, y_now = _time(Resampler, sr_in, sr_out, chunk, a.frames)
            t_was, y_was = _time(GatherResampler, sr_in, sr_out, chunk, a.frames)
            now.append(t_now)
            was.append(t_was)
            same = same and np.array_equal(y_now, y_was)
        m_now, m_was = statistics.median(now), statistics.median(was)
        print(f"| {sr_in} -> {sr_out} | {m_now:.0f} | {m_was:.0f} | {m_was / m_now:.1f}x | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
