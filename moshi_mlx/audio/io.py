"""The one audio-file reader and writer.

Reading goes through `soundfile` (libsndfile, bundled in its wheels: WAV, FLAC, OGG/Vorbis,
Opus, MP3, AIFF, ...): any rate, any channel count -> float32 mono at the requested rate
(channels averaged, then `audio.resample`). `iter_audio` does the same block by block so a
long file never sits in memory whole. Problems are one-line `AudioError`s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import AudioError  # re-exported: `from moshi_mlx.audio.io import AudioError` keeps working
from ..constants import SAMPLE_RATE as DEFAULT_RATE
from .resample import Resampler


def _sf():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is a dependency
        raise AudioError("reading audio files needs the soundfile package: pip install soundfile") from None
    return soundfile


def _open(path: str | os.PathLike):
    sf = _sf()
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"expected an audio file but {p} is a directory")
    if p.stat().st_size == 0:
        raise AudioError(f"audio file {p} is empty (0 bytes)")
    try:
        return sf.SoundFile(str(p))
    except Exception as e:  # LibsndfileError / RuntimeError depending on the version
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"cannot read {p} as audio: {msg}") from None


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample rate, channels, frames) of a readable audio file."""
    with _open(path) as f:
        return f.samplerate, f.channels, f.frames


def iter_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_RATE, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Yield the file as float32 mono blocks at `sample_rate` (the last one may be short)."""
    with _open(path) as f:
        if f.frames == 0:
            raise AudioError(f"audio file {path} contains no samples")
        rs = Resampler(f.samplerate, sample_rate)
        block = max(1, int(block_seconds * f.samplerate))
        got = 0
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"cannot decode {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            if data.shape[0] == 0:
                break
            got += data.shape[0]
            out = rs.process(data.mean(axis=1))
            if out.size:
                yield out
        if got == 0:
            raise AudioError(f"audio file {path} contains no samples")
        tail = rs.flush()
        if tail.size:
            yield tail


def read_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_RATE) -> np.ndarray:
    """The whole file as float32 mono [T] at `sample_rate`."""
    return np.concatenate(list(iter_audio(path, sample_rate)))


class AudioWriter:
    """Incremental writer: format from the extension (.wav 16-bit PCM, .flac, .ogg, .mp3...).
    Samples are mono float; integer formats are clipped to [-1, 1]."""

    def __init__(self, path: str | os.PathLike, sample_rate: int = DEFAULT_RATE, subtype: str | None = None):
        sf = _sf()
        self.path = Path(path)
        fmt = self.path.suffix.lstrip(".").upper()
        fmt = {"OGA": "OGG", "OPUS": "OGG"}.get(fmt, fmt)
        if fmt not in sf.available_formats():
            raise AudioError(f"cannot write {self.path}: unknown audio format {self.path.suffix!r} "
                             f"(use e.g. .wav, .flac, .ogg, .mp3)")
        if subtype is None and self.path.suffix.lower() == ".opus":
            subtype = "OPUS"
        if not self.path.parent.exists():
            raise AudioError(f"cannot write {self.path}: directory {self.path.parent} does not exist")
        try:
            self._f = sf.SoundFile(str(self.path), "w", samplerate=int(sample_rate), channels=1, format=fmt, subtype=subtype)
        except Exception as e:
            raise AudioError(f"cannot write {self.path}: {str(e).splitlines()[0]}") from None
        self._clip = not (self._f.subtype in ("FLOAT", "DOUBLE"))

    def write(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if self._clip:
            x = np.clip(x, -1.0, 1.0)
        self._f.write(x)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_audio(path: str | os.PathLike, pcm: np.ndarray, sample_rate: int = DEFAULT_RATE, subtype: str | None = None) -> None:
    """Write mono float samples (any shape holding one channel) to `path`."""
    with AudioWriter(path, sample_rate, subtype) as w:
        w.write(pcm)
