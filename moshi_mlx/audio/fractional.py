"""Reading a signal at fractional sample positions: a Kaiser-windowed sinc interpolator.

Why: the echo canceller's reference must follow the microphone's clock when the two devices'
clocks drift apart (a USB microphone beside a laptop's speakers: tens of ppm), so it is read at
positions that advance by 1 + drift per microphone sample, between the samples it has."""

from __future__ import annotations

import numpy as np


class FractionalReader:
    """`read(buf, positions)`: `buf` interpolated at `positions` (floats, in samples of `buf`;
    zero outside it). `half` taps each side, the fraction quantized to 1/`phases` of a sample
    (an error below 1/(2 x phases) sample: -56 dB at Nyquist with 1024), cutoff `rolloff` x
    Nyquist."""

    def __init__(self, half: int = 16, phases: int = 1024, rolloff: float = 0.97, beta: float = 8.0):
        self.half, self.phases = int(half), int(phases)
        frac = np.arange(self.phases + 1)[:, None] / self.phases  # the row for fraction f
        j = np.arange(-self.half + 1, self.half + 1)[None, :]  # taps: samples floor(p) + j
        x = j - frac  # distance of each tap from the position
        window = np.i0(beta * np.sqrt(np.clip(1.0 - (x / self.half) ** 2, 0.0, None))) / np.i0(beta)
        self._table = (rolloff * np.sinc(rolloff * x) * window).astype(np.float32)
        self._taps = j[0]

    def read(self, buf: np.ndarray, positions: np.ndarray) -> np.ndarray:
        base = np.floor(positions)
        row = np.rint((positions - base) * self.phases).astype(np.int64)
        idx = base.astype(np.int64)[:, None] + self._taps[None, :]
        inside = (idx >= 0) & (idx < len(buf))
        x = np.where(inside, buf[np.clip(idx, 0, max(len(buf) - 1, 0))] if len(buf) else 0.0, 0.0)
        return np.einsum("nt,nt->n", x.astype(np.float32), self._table[row]).astype(np.float32)
