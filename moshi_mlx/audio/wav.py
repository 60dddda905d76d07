"""The one WAV writer: 16-bit PCM, any channel count, a valid file after every write.

The RIFF and data sizes are patched after each block, so a file cut short (Ctrl-C, a
vanished device, a crash, a full disk) still plays and holds everything written. A failed
write (disk full, file size limit) is undone by truncating the file back to its last whole
block, then reported as one-line `OutputError`; further writes are refused.
"""

from __future__ import annotations

import os
import struct
import threading

import numpy as np

from ..errors import OutputError
from ..outputs import os_error

HEADER_BYTES = 44
_MAX_U32 = 0xFFFFFFFF


def wav_header(sample_rate: int, channels: int, frames: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV holding `frames` frames (sizes clamped to
    32 bits past 4 GiB: readers then read to the end of the file)."""
    block = channels * 2
    data = min(frames * block, _MAX_U32 - 36)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def to_pcm16(samples: np.ndarray, channels: int) -> bytes:
    """float [frames, channels] (or [frames] when mono) in [-1, 1] -> little-endian int16 bytes;
    NaN becomes 0 and values outside [-1, 1] are clipped."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != channels:
        raise ValueError(f"expected samples [frames, {channels}], got {x.shape}")
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class WavWriter:
    """Appends blocks to `path` (opened here, created or truncated); `name` is what messages
    call it (the final name when `path` is a staged temporary file). Thread-safe."""

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, name: str | os.PathLike | None = None):
        self.path = os.fspath(path)
        self.name = os.fspath(name) if name is not None else self.path
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block = self.channels * 2
        self._lock = threading.Lock()
        self._frames = 0
        self.error: OutputError | None = None
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            self._pwrite(wav_header(self.sample_rate, self.channels, 0), 0)
        except OSError as e:
            raise os_error(self.name, e) from None

    def _pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def write(self, samples: np.ndarray) -> None:
        """samples: float [frames, channels] (or [frames] when mono) in [-1, 1]."""
        data = to_pcm16(samples, self.channels)
        with self._lock:
            if self.error is not None:
                raise self.error
            if self._fd is None:
                return
            end = HEADER_BYTES + self._frames * self.block
            try:
                self._pwrite(data, end)
                frames = self._frames + len(data) // self.block
                self._pwrite(wav_header(self.sample_rate, self.channels, frames), 0)
                self._frames = frames
            except OSError as e:
                try:  # keep the file valid: drop the partial block, restore the header
                    os.ftruncate(self._fd, end)
                    self._pwrite(wav_header(self.sample_rate, self.channels, self._frames), 0)
                except OSError:
                    pass
                self.error = os_error(self.name, e)
                raise self.error from None

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def seconds(self) -> float:
        return self._frames / self.sample_rate

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)
