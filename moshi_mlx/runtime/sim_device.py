"""A simulated sound card: drives a `DuplexPipeline` exactly like PortAudio callbacks would,
on a real-time clock (or a scaled one), with no audio hardware. Used by tests, the latency
benchmark and `--simulate` runs of the live loop."""

from __future__ import annotations

import threading
import time

import numpy as np

from ..constants import FRAME_SIZE, SAMPLE_RATE


class SimulatedAudioDevice:
    """Every `block` samples of (scaled) time: one capture callback, one playback callback.

    source: mono or [n, channels] float32 samples at `sample_rate` (looped; silence if None).
    speed: 1.0 = real time, 2.0 = twice as fast. Sleeping, not spinning, between blocks.
    """

    def __init__(self, source: np.ndarray | None = None, *, sample_rate: int = SAMPLE_RATE, block: int = FRAME_SIZE,
                 channels: int = 1, speed: float = 1.0, loop: bool = True):
        self.source = None if source is None else np.asarray(source, dtype=np.float32)
        self.sample_rate = sample_rate
        self.block = block
        self.channels = channels
        self.speed = speed
        self.loop = loop
        self.played: list[np.ndarray] = []
        self.stop_event = threading.Event()
        self._pos = 0

    def _next_input(self) -> np.ndarray | None:
        n = self.block
        if self.source is None:
            x = np.zeros((n, self.channels), np.float32)
        else:
            src = self.source if self.source.ndim == 2 else self.source[:, None]
            if self._pos >= len(src):
                if not self.loop:
                    return None
                self._pos = 0
            x = src[self._pos:self._pos + n]
            self._pos += n
            if len(x) < n:
                x = np.concatenate([x, np.zeros((n - len(x), x.shape[1]), np.float32)])
            if x.shape[1] != self.channels:
                x = np.repeat(x[:, :1], self.channels, axis=1)
        return x

    def run(self, pipeline, n_blocks: int, keep_output: bool = True) -> None:
        """Run `n_blocks` callback periods (or until `stop_event`/a pipeline failure)."""
        period = self.block / self.sample_rate / self.speed
        t0 = time.monotonic()
        for k in range(n_blocks):
            if self.stop_event.is_set() or pipeline.failed.is_set():
                break
            x = self._next_input()
            if x is None:
                break
            pipeline.push_input(x if self.channels > 1 else x[:, 0])
            out = pipeline.read_output(self.block)
            if keep_output:
                self.played.append(out)
            wait = t0 + (k + 1) * period - time.monotonic()
            if wait > 0:
                self.stop_event.wait(wait)

    def played_audio(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)
