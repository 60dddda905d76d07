"""The one audio-file reader and writer.

Reading goes through `soundfile` (libsndfile, bundled in its wheels: WAV, FLAC, OGG/Vorbis,
Opus, MP3, AIFF, ...): any rate, any channel count -> float32 mono at the requested rate
(channels averaged, then `audio.resample`). `iter_audio` does the same block by block so a
long file never sits in memory whole. Problems are one-line `AudioError`s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from ..constants import SAMPLE_RATE as DEFAULT_RATE
from ..errors import (
    AudioError,
    OutputError,
)  # AudioError re-exported: `from moshi_mlx.audio.io import AudioError` keeps working
from ..validation import silence_non_finite
from .resample import Resampler


def _sf():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is a dependency
        raise AudioError("reading audio files needs the soundfile package: pip install soundfile") from None
    return soundfile


def _open(path: str | os.PathLike):
    sf = _sf()
    if not str(path).strip():  # Path("") is ".": it was "expected an audio file but . is a directory"
        raise AudioError("audio file: empty path")
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"expected an audio file but {p} is a directory")
    if p.is_file() and p.stat().st_size == 0:  # a pipe (/dev/stdin, <(...)) has no size: it is read as a stream
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


def iter_audio(
    path: str | os.PathLike, sample_rate: int = DEFAULT_RATE, block_seconds: float = 10.0
) -> Iterator[np.ndarray]:
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
                raise AudioError(
                    f"cannot decode {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
            if data.shape[0] == 0:
                break
            got += data.shape[0]
            data, bad = silence_non_finite(data)
            if bad:  # float files can hold NaN/inf (other tools' bugs): silence, with a warning
                print(f"WARNING: {path}: {bad} NaN/infinite samples replaced by silence", file=sys.stderr)
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


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")


def audio_format(path: str | os.PathLike) -> str:
    """soundfile's format name for an output path's extension (one-line AudioError if unknown)."""
    p = Path(path)
    fmt = p.suffix.lstrip(".").upper()
    fmt = {"OGA": "OGG", "OPUS": "OGG", "AIF": "AIFF"}.get(fmt, fmt)
    if p.suffix.lower() not in AUDIO_SUFFIXES or fmt not in _sf().available_formats():
        raise AudioError(f"cannot write {p}: unknown audio format {p.suffix!r} (use e.g. .wav, .flac, .ogg, .mp3)")
    return fmt


class _Direct:
    """`Staged`'s interface for a file written in place (a live recording): nothing to rename,
    and what was written is kept whatever happens."""

    def __init__(self, path: Path):
        self.path = self.temp = path
        self.done = False

    def commit(self) -> Path:
        self.done = True
        return self.path

    discard = commit


class AudioWriter:
    """Incremental writer: format from the extension (.wav 16-bit PCM, .flac, .ogg, .mp3...).

    Samples are float [frames] (mono) or [frames, channels]; integer formats are clipped to
    [-1, 1]. The file is written under a temporary name beside `path` and renamed into place
    by `close()` (or on leaving a `with` block without an exception); `discard()` (or an
    exception in the block) removes it, so `path` never holds half a file. 16-bit WAV goes
    through `audio.wav.WavWriter`, valid on disk after every block.

    `live=True` (16-bit WAV only: a live recording) writes at `path` itself from the start,
    so the file can be watched or copied as it grows and a crash leaves it valid there;
    callers check that replacing an existing file was allowed (`--force`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int = DEFAULT_RATE,
        subtype: str | None = None,
        channels: int = 1,
        live: bool = False,
    ):
        from ..outputs import Staged
        from .wav import WavWriter

        self.path = Path(path)
        fmt = audio_format(self.path)
        if subtype is None and self.path.suffix.lower() == ".opus":
            subtype = "OPUS"
        if not self.path.parent.exists():
            raise AudioError(f"cannot write {self.path}: directory {self.path.parent} does not exist")
        self.channels = int(channels)
        if live and not (fmt == "WAV" and subtype in (None, "PCM_16")):
            raise AudioError(f"cannot record to {self.path}: a live recording is a 16-bit .wav")
        self._staged = _Direct(self.path) if live else Staged(self.path)
        self._wav: WavWriter | None = None
        self._f = None
        try:
            if fmt == "WAV" and subtype in (None, "PCM_16"):
                self._wav = WavWriter(self._staged.temp, sample_rate, self.channels, name=self.path)
            else:
                self._f = _sf().SoundFile(
                    str(self._staged.temp),
                    "w",
                    samplerate=int(sample_rate),
                    channels=self.channels,
                    format=fmt,
                    subtype=subtype,
                )
        except BaseException as e:  # a stop signal too: the temporary file is not left behind
            self._staged.discard()
            if isinstance(e, OutputError) or not isinstance(e, Exception):
                raise
            raise AudioError(f"cannot write {self.path}: {str(e).splitlines()[0]}") from None
        self._clip = self._f is not None and self._f.subtype not in ("FLOAT", "DOUBLE")
        self.frames = 0

    @property
    def temp(self) -> Path:
        """Where the samples are until `close()` (a valid WAV as it grows, for 16-bit WAV)."""
        return self._staged.temp

    def write(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, dtype=np.float32)
        x = x.reshape(-1) if self.channels == 1 else x.reshape(-1, self.channels)
        if self._wav is not None:
            self._wav.write(x)
        else:
            if self._clip:
                x = np.clip(x, -1.0, 1.0)
            try:
                self._f.write(x)
            except Exception as e:
                raise OutputError(
                    f"cannot write {self.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
        self.frames += x.shape[0]

    def _close_file(self) -> None:
        if self._wav is not None:
            self._wav.close()
        elif self._f is not None and not self._f.closed:
            try:
                self._f.close()
            except Exception as e:
                raise OutputError(
                    f"cannot write {self.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None

    def close(self) -> Path:
        """Finish the file and rename it to `path` (what was written so far, also after a
        failed write: a WAV is valid up to its last whole block)."""
        if not self._staged.done:
            try:
                self._close_file()
            except BaseException:
                self._staged.discard()
                raise
            self._staged.commit()
        return self.path

    def discard(self) -> None:
        """Drop the file: `path` keeps what it held before (or stays absent)."""
        try:
            self._close_file()
        except OutputError:
            pass
        self._staged.discard()

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_audio(
    path: str | os.PathLike,
    pcm: np.ndarray,
    sample_rate: int = DEFAULT_RATE,
    subtype: str | None = None,
    channels: int = 1,
) -> None:
    """Write float samples ([frames] mono, or [frames, channels]) to `path`, atomically."""
    with AudioWriter(path, sample_rate, subtype, channels=channels) as w:
        w.write(pcm)
