"""A simulated sound card: drives a `DuplexPipeline` exactly like PortAudio callbacks would,
on a real-time clock (or a scaled one), with no audio hardware. Used by tests, the latency
benchmark and `--simulate` runs of the live loop."""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from ..constants import FRAME_SIZE, SAMPLE_RATE


class SimulatedAudioDevice:
    """Every `block` samples of (scaled) time: one capture callback, one playback callback.

    source: mono or [n, channels] float32 samples at `sample_rate` (looped; silence if None).
    speed: 1.0 = real time, 2.0 = twice as fast. Sleeping, not spinning, between blocks.
    echo_path: an impulse response (at `sample_rate`) through which what is played comes
    back into the microphone, like a laptop's speakers into its microphone; the echo of a
    played block is heard from the next capture block on (the device's round trip is the
    response's delay). `echo_noise`: white noise (RMS) added to the microphone with it.
    then_silence (with loop=False): when the source ends, `on_source_end(pipeline)` is called
    and `source_done` set, then silence is captured until `run` is stopped (a file's answer
    lags it: the session stops once it has caught up, runtime/live.py).
    sample_clock: `clock()` counts the blocks handed over instead of reading real time, so
    every timestamp the pipeline takes is exact whatever the scheduling. With the real clock a
    loaded machine runs the callbacks late (`speed` times later in device time), which moves
    the echo canceller's alignment of the two streams as a real device's jitter would; a check
    of what the canceller produces, not of how it bears jitter, wants it fixed.
    """

    def __init__(
        self,
        source: np.ndarray | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        block: int = FRAME_SIZE,
        channels: int = 1,
        speed: float = 1.0,
        loop: bool = True,
        echo_path: np.ndarray | None = None,
        echo_noise: float = 0.0,
        seed: int = 0,
        then_silence: bool = False,
        on_source_end: Callable | None = None,
        sample_clock: bool = False,
    ):
        self.source = None if source is None else np.asarray(source, dtype=np.float32)
        self.sample_rate = sample_rate
        self.block = block
        self.channels = channels
        self.speed = speed
        self.loop = loop
        self.played: list[np.ndarray] = []
        self.stop_event = threading.Event()
        self._pos = 0
        self.echo_path = None if echo_path is None else np.asarray(echo_path, np.float32).reshape(-1)
        self.echo_noise = echo_noise
        self._rng = np.random.default_rng(seed)
        self._echo = np.zeros(0, np.float32)  # echo still to arrive at the microphone
        self._spectrum = None
        self.echoes: list[np.ndarray] = []  # the echo part of each captured block (for tests)
        self._t0 = time.monotonic()
        self.then_silence = then_silence
        self.on_source_end = on_source_end
        self.source_done = threading.Event()
        self.source_blocks = 0  # blocks of the source captured (the last one zero-padded)
        self.sample_clock = sample_clock
        self._blocks_run = 0  # callback periods begun (the sample clock's time)

    def clock(self) -> float:
        """The device's time: real time scaled by `speed` (give it to the pipeline as its
        clock when running faster than real time, so timestamps match sample counts); with
        `sample_clock`, the start of the current callback period, exactly."""
        if self.sample_clock:
            return self._t0 + self._blocks_run * self.block / self.sample_rate
        return self._t0 + (time.monotonic() - self._t0) * self.speed

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
            x = src[self._pos : self._pos + n]
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
                if not self.then_silence:
                    break
                if not self.source_done.is_set():
                    if self.on_source_end is not None:
                        self.on_source_end(pipeline)
                    self.source_done.set()
                x = np.zeros((self.block, self.channels), np.float32)
            elif not self.source_done.is_set():
                self.source_blocks += 1
            if self.echo_path is not None:
                x = x + self._take_echo()[:, None]
            pipeline.push_input(x if self.channels > 1 else x[:, 0])
            out = pipeline.read_output(self.block)
            if self.echo_path is not None:
                self._add_echo(out)
            if keep_output:
                self.played.append(out)
            self._blocks_run += 1
            wait = t0 + (k + 1) * period - time.monotonic()
            if wait > 0:
                self.stop_event.wait(wait)

    def _add_echo(self, played: np.ndarray) -> None:
        n = len(played) + len(self.echo_path) - 1
        nfft = 1 << (n - 1).bit_length()
        e = np.fft.irfft(np.fft.rfft(played, nfft) * self._echo_spectrum(nfft), nfft)[:n].astype(np.float32)
        if len(self._echo) < len(e):
            self._echo = np.concatenate([self._echo, np.zeros(len(e) - len(self._echo), np.float32)])
        self._echo[: len(e)] += e

    def _echo_spectrum(self, nfft: int) -> np.ndarray:
        if self._spectrum is None or self._spectrum[0] != nfft:
            self._spectrum = (nfft, np.fft.rfft(self.echo_path, nfft))
        return self._spectrum[1]

    def _take_echo(self) -> np.ndarray:
        n = self.block
        e = np.zeros(n, np.float32)
        k = min(n, len(self._echo))
        e[:k] = self._echo[:k]
        self._echo = self._echo[k:]
        if self.echo_noise:
            e += (self._rng.standard_normal(n) * self.echo_noise).astype(np.float32)
        self.echoes.append(e)
        return e

    def played_audio(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)
