"""A WAV writer that is valid on disk after every write.

The RIFF and data sizes are patched after each block, so a recording cut short by Ctrl-C,
a vanished device or a crash is still a playable file containing everything written.
"""

from __future__ import annotations

import os
import struct
import threading

import numpy as np


class IncrementalWavWriter:
    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int):
        self.path = os.fspath(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self._lock = threading.Lock()
        self._fh = open(self.path, "wb")
        self._frames = 0
        self._write_header()

    def _write_header(self) -> None:
        data_bytes = self._frames * self.channels * 2
        block = self.channels * 2
        header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, self.channels, self.sample_rate,
                                         self.sample_rate * block, block, 16)
        header += b"data" + struct.pack("<I", data_bytes)
        self._fh.seek(0)
        self._fh.write(header)
        self._fh.seek(0, os.SEEK_END)

    def write(self, samples: np.ndarray) -> None:
        """samples: float [frames, channels] (or [frames] when mono) in [-1, 1]."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}")
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(pcm.tobytes())
            self._frames += x.shape[0]
            self._write_header()
            self._fh.flush()

    @property
    def frames(self) -> int:
        return self._frames

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
