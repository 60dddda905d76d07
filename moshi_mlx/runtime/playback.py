"""Playing generated audio on an output device as it is produced (TTS without an output file).

A PortAudio output stream at the device's native rate pulls from a buffer that the
generator fills with 24 kHz chunks (resampled on the way in). The callback never blocks:
when generation is slower than real time it plays silence until the next chunk. Playback
starts once `prebuffer_s` of audio is queued (or the text is finished), which absorbs
the uneven pace of generation.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from ..audio.resample import Resampler
from ..constants import SAMPLE_RATE
from .devices import AudioDeviceError, _devices, _sd, find_device


class Speaker:
    def __init__(
        self, device=None, sample_rate: int = SAMPLE_RATE, prebuffer_s: float = 0.5, block_seconds: float = 0.04
    ):
        self.sd = _sd()
        self.index = find_device(device, "output")
        info = _devices()[self.index]
        self.name = info["name"]
        self.rate = int(info["default_samplerate"])
        self.channels = min(2, int(info["max_output_channels"]))
        self._resampler = Resampler(sample_rate, self.rate) if self.rate != sample_rate else None
        self._chunks: deque[np.ndarray] = deque()
        self._queued = 0  # samples at the device rate
        self._lock = threading.Lock()
        self._prebuffer = int(prebuffer_s * self.rate)
        self._block = int(round(self.rate * block_seconds))
        self._stream = None
        self.underruns = 0

    def describe(self) -> str:
        return f"[{self.index}] {self.name} @ {self.rate} Hz x{self.channels}"

    def _callback(self, outdata, frames, time_info, status) -> None:
        out = np.zeros(frames, dtype=np.float32)
        filled = 0
        with self._lock:
            while filled < frames and self._chunks:
                c = self._chunks[0]
                n = min(frames - filled, len(c))
                out[filled : filled + n] = c[:n]
                filled += n
                if n == len(c):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = c[n:]
            self._queued -= filled
        if filled < frames:
            self.underruns += 1
        outdata[:] = out[:, None]

    def _start(self) -> None:
        try:
            self._stream = self.sd.OutputStream(
                device=self.index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="float32",
                blocksize=self._block,
                callback=self._callback,
            )
            self._stream.start()
        except Exception as e:
            raise AudioDeviceError(f"cannot open output device {self.describe()}: {e}") from None

    def write(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            x = self._resampler.process(x)
        with self._lock:
            self._chunks.append(x)
            self._queued += len(x)
            ready = self._queued >= self._prebuffer
        if self._stream is None and ready:
            self._start()

    def drain(self, timeout: float | None = None) -> None:
        """Play what is queued (starting the stream if it has not started), then return."""
        if self._resampler is not None:
            tail = self._resampler.flush()
            if len(tail):
                with self._lock:
                    self._chunks.append(tail)
                    self._queued += len(tail)
        if self._stream is None:
            with self._lock:
                if not self._queued:
                    return
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._queued <= 0:
                    break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.02)
        time.sleep(self._block / self.rate * 2)  # the last block leaves the callback

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:
                pass
            self._stream = None
