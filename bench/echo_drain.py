"""Draining a backlog of reference blocks in the echo canceller (`EchoCanceller._drain_reference`).

The playback callback hands the canceller a block every few milliseconds; the encoder thread
moves them onto the reference timeline when it next cleans the microphone. When that thread
stalls (a slow first step, a loaded machine), the blocks pile up. This times draining a backlog
of N 10 ms blocks with the drain as it is (one join per drain) and as it was (the buffer joined
again for every block: `drain_one_block_at_a_time`, also the tests' oracle), median of repeats.

    python bench/echo_drain.py [--blocks 100,1000,3000] [--rate 24000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from moshi_mlx.constants import SAMPLE_RATE
from moshi_mlx.runtime.echo import EchoCanceller


def drain_one_block_at_a_time(ec: EchoCanceller) -> None:
    """`_drain_reference` before the change: the buffer joined again for every block."""
    while ec._incoming:
        block, t_play = ec._incoming.popleft()
        x = np.asarray(block, np.float32).reshape(-1)
        if ec._anchoring():
            ec._ref_t0 = ec._ref_anchor.add(t_play - ec._ref_received / ec.output_rate)
        ec._ref_received += len(x)
        y = ec._resample(x) if ec._resample is not None else x
        ec._ref_buf = np.concatenate([ec._ref_buf, y])
    keep_from = max((ec._ref_fed or 0) - SAMPLE_RATE, ec._ref_base + len(ec._ref_buf) - 4 * SAMPLE_RATE)
    if keep_from > ec._ref_base:
        drop = min(keep_from - ec._ref_base, len(ec._ref_buf))
        ec._ref_buf = ec._ref_buf[drop:]
        ec._ref_base += drop


def time_drain(drain, n_blocks: int, rate: int, repeats: int) -> float:
    """Median seconds to drain `n_blocks` blocks of 10 ms at `rate` (a fresh canceller each time)."""
    block = rate // 100
    rng = np.random.default_rng(0)
    blocks = [((0.1 * rng.standard_normal(block)).astype(np.float32), i / 100) for i in range(n_blocks)]
    times = []
    for _ in range(repeats):
        ec = EchoCanceller(output_rate=rate)
        ec._incoming.extend(blocks)
        t0 = time.perf_counter()
        drain(ec)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", default="100,1000,3000", help="backlog sizes, in 10 ms blocks")
    ap.add_argument("--rate", type=int, default=SAMPLE_RATE, help="output device rate (48000: resampled)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"| backlog (10 ms blocks at {args.rate} Hz) | one join per drain (ms) | one join per block (ms) |")
    print("|---:|---:|---:|")
    for n in (int(b) for b in args.blocks.split(",")):
        now = time_drain(EchoCanceller._drain_reference, n, args.rate, args.repeats)
        before = time_drain(drain_one_block_at_a_time, n, args.rate, args.repeats)
        print(f"| {n} ({n / 100:g} s) | {1000 * now:.1f} | {1000 * before:.1f} |")


if __name__ == "__main__":
    main()
