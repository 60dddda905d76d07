"""Stereo recording of a conversation: user on the left, Moshi on the right, at 24 kHz.

Both sides are written on the device's timeline (the user as captured, Moshi as played,
silence included), so the channels stay aligned. Audio threads only enqueue; a writer
thread appends to a live `AudioWriter`: a 16-bit WAV at its final name, valid after every
block, so Ctrl-C, a vanished device or a crash lose nothing. (Front ends refuse to start over
an existing file unless told to, `--force`.)

A failed write (disk full, file size limit) stops the recording: what was written stays a
valid WAV, `error` holds the one-line `OutputError` and `failed` is set, so the front end
can stop the session with a clear message instead of carrying on unrecorded.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from ..audio.io import AudioWriter
from ..constants import SAMPLE_RATE
from ..errors import OutputError


class StereoRecorder:
    def __init__(self, path, sample_rate: int = SAMPLE_RATE):
        self.writer = AudioWriter(path, sample_rate, channels=2, live=True)
        self.sample_rate = sample_rate
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = {0: [], 1: []}  # side -> list of arrays not yet paired
        self.error: OutputError | None = None
        self.failed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moshi-recorder", daemon=True)
        self._closed = False
        self._thread.start()

    def add_user(self, pcm: np.ndarray) -> None:
        if not self._closed and self.error is None:
            self._q.put((0, np.array(pcm, dtype=np.float32).reshape(-1)))

    def add_model(self, pcm: np.ndarray) -> None:
        if not self._closed and self.error is None:
            self._q.put((1, np.array(pcm, dtype=np.float32).reshape(-1)))

    def _available(self, side: int) -> int:
        return sum(len(a) for a in self._pending[side])

    def _take(self, side: int, n: int) -> np.ndarray:
        out, got = [], 0
        while got < n:
            a = self._pending[side][0]
            need = n - got
            if len(a) <= need:
                out.append(a)
                got += len(a)
                self._pending[side].pop(0)
            else:
                out.append(a[:need])
                self._pending[side][0] = a[need:]
                got = n
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _flush_pairs(self, final: bool = False) -> None:
        if self.error is not None:
            self._pending = {0: [], 1: []}
            return
        n = min(self._available(0), self._available(1))
        if final:
            n = max(self._available(0), self._available(1))
        if n == 0:
            return
        sides = []
        for s in (0, 1):
            take = min(n, self._available(s))
            x = self._take(s, take)
            if take < n:
                x = np.concatenate([x, np.zeros(n - take, np.float32)])
            sides.append(x)
        try:
            self.writer.write(np.stack(sides, axis=1))
        except OutputError as e:
            self.error = e
            self.failed.set()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                break
            side, pcm = item
            self._pending[side].append(pcm)
            # one side may run ahead (device buffering); write what both sides have
            self._flush_pairs()
        self._flush_pairs(final=True)

    def close(self) -> Path:
        """Write everything received so far (padding the shorter side) and close the file
        (also after a failed write: it holds what was written)."""
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join()
        return self.writer.close()

    @property
    def seconds(self) -> float:
        return self.writer.frames / self.sample_rate

    @property
    def path(self) -> str:
        return str(self.writer.path)
