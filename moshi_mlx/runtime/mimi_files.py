"""Audio file <-> Mimi codes, streamed in chunks of whole frames so memory stays bounded
for files of any length (the codec's streaming mode is exact, so the result equals a
one-shot batch call). Works with any backend that has the `Mimi` interface."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np

from ..audio.io import AudioWriter, audio_info, iter_audio
from ..errors import UsageError

# frames fed per streaming call (2 s): amortises per-call overhead, bounds memory
CHUNK_FRAMES = 25

ProgressFn = Callable[[int], None]


def frame_count(path: str | os.PathLike, mimi) -> int:
    """How many code frames `path` will give (for a progress bar)."""
    sr, _, frames = audio_info(path)
    samples = -(-frames * mimi.sample_rate // sr)
    return -(-samples // mimi.frame_size)


def _pcm_chunks(path, mimi, chunk_frames: int) -> Iterator[tuple[np.ndarray, int]]:
    """(pcm [1, 1, n * frame_size], valid samples) chunks of the file at the codec's rate;
    the last chunk is zero-padded to whole frames."""
    fs = mimi.frame_size
    size = fs * chunk_frames
    buf = np.zeros(0, np.float32)
    for block in iter_audio(path, mimi.sample_rate):
        buf = np.concatenate([buf, block])
        while buf.shape[0] >= size:
            yield buf[:size].reshape(1, 1, -1), size
            buf = buf[size:]
    if buf.shape[0]:
        n = buf.shape[0]
        padded = np.pad(buf, (0, -n % fs))
        yield padded.reshape(1, 1, -1), n


def _steps(mimi) -> int:
    return CHUNK_FRAMES if getattr(mimi, "backend", "mlx") == "mlx" else 1


def encode_file(mimi, path: str | os.PathLike, progress: ProgressFn | None = None) -> np.ndarray:
    """Encode an audio file (any format/rate/channels) -> int32 codes [1, K, frames]."""
    mimi.reset()
    codes = []
    for pcm, _ in _pcm_chunks(path, mimi, _steps(mimi)):
        c = np.array(mimi.encode_step(pcm))
        codes.append(c)
        if progress:
            progress(c.shape[-1])
    mimi.reset()
    return np.concatenate(codes, axis=-1).astype(np.int32)


def decode_to_file(
    mimi, codes: np.ndarray, path: str | os.PathLike, progress: ProgressFn | None = None, num_samples: int | None = None
) -> int:
    """Decode codes [K, F] or [1, K, F] into an audio file at the codec's rate; returns the
    number of samples written (`num_samples` trims the end, e.g. to an original length)."""
    c = np.asarray(codes)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3 or c.shape[0] != 1:
        raise UsageError(f"expected codes of shape [K, T] or [1, K, T], got {tuple(np.asarray(codes).shape)}")
    limit = num_samples if num_samples is not None else c.shape[-1] * mimi.frame_size
    written = 0
    mimi.reset()
    step = _steps(mimi)
    with AudioWriter(path, mimi.sample_rate) as out:
        for i in range(0, c.shape[-1], step):
            pcm = np.array(mimi.decode_step(c[..., i : i + step])).reshape(-1)
            pcm = pcm[: max(0, limit - written)]
            out.write(pcm)
            written += pcm.shape[0]
            if progress:
                progress(min(step, c.shape[-1] - i))
    mimi.reset()
    return written


def roundtrip_file(
    mimi, src: str | os.PathLike, dst: str | os.PathLike, progress: ProgressFn | None = None
) -> np.ndarray:
    """Encode then decode a file chunk by chunk (output trimmed to the input's length at the
    codec's rate); returns the codes [1, K, frames]."""
    mimi.reset()
    codes = []
    with AudioWriter(dst, mimi.sample_rate) as out:
        for pcm, valid in _pcm_chunks(src, mimi, _steps(mimi)):
            c = mimi.encode_step(pcm)
            y = np.array(mimi.decode_step(c)).reshape(-1)[:valid]
            out.write(y)
            codes.append(np.array(c))
            if progress:
                progress(codes[-1].shape[-1])
    mimi.reset()
    return np.concatenate(codes, axis=-1).astype(np.int32)
