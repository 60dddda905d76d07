"""Clock drift between the microphone and the output device, read from the echo canceller's
delay windows (runtime/echo.py): why and how measured, docs/echo-cancellation.md ("Clock drift
followed")."""

from __future__ import annotations

import numpy as np


class DriftTracker:
    """The microphone's clock against the output device's, from the delay windows: the lag the
    canceller sees grows (or shrinks) steadily when they drift apart. `ratio` (reference
    samples per microphone sample, minus 1) is corrected by the slope of the last windows'
    lags once they span MIN_SPAN_S, the slope is at least SIGNIFICANT, and the lag moved the
    same way by at least STEP_S from each quarter of the span to the next: GCC-PHAT's lags
    come in 0.125 ms steps (one step inside the span looks like 8-12 ppm), and a moved
    microphone shifts the lag once (a step; two moves, two), a drift steadily. The lags are
    then counted afresh."""

    SIGNIFICANT = 15e-6  # below this the filter follows the drift itself (27-33 dB at 10 ppm)
    MIN_SPAN_S = 24.0
    PARTS = 4
    STEP_S = 0.06e-3
    KEEP = 16

    def __init__(self):
        self.ratio = 0.0
        self._points: list[tuple[float, float]] = []

    def forget(self) -> None:
        """The reference was moved (re-alignment): the lags jump, the slope starts again."""
        self._points = []

    def add(self, t_s: float, lag_s: float) -> bool:
        """A confident window's lag at capture time `t_s`; True if `ratio` was corrected."""
        self._points = (self._points + [(t_s, lag_s)])[-self.KEEP :]
        t, lag = (np.array(v) for v in zip(*self._points))
        if t[-1] - t[0] < self.MIN_SPAN_S:
            return False
        part = np.minimum(self.PARTS - 1, ((t - t[0]) * self.PARTS / (t[-1] - t[0] + 1e-9)).astype(int))
        if len(set(part.tolist())) < self.PARTS:
            return False
        steps = np.diff([float(np.median(lag[part == k])) for k in range(self.PARTS)])
        steady = bool(np.all(steps >= self.STEP_S) or np.all(steps <= -self.STEP_S))
        tc = t - t.mean()
        slope = float(np.dot(tc, lag - lag.mean()) / np.dot(tc, tc))
        if not steady or abs(slope) < self.SIGNIFICANT:
            return False
        self.ratio -= slope  # the echo later and later: the reference read slower
        self._points = []
        return True
