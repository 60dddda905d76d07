"""`rustymimi` (Kyutai's Rust Mimi, optional extra) behind the same interface as `Mimi`.

It only knows the published codec config and reads the published checkpoint directly.
Imported lazily: moshi_mlx never needs it. On CPUs where MLX's BLAS is slow it is the faster
codec (see README, "Mimi speed"); `best_backend()` picks it for the live loop.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np

from ..constants import MIMI_CODEBOOKS
from ..errors import UsageError, WeightsError
from .mimi_config import mimi_202407


def rustymimi_available() -> bool:
    try:
        import rustymimi  # noqa: F401
    except ImportError:
        return False
    return True


def require_rustymimi() -> None:
    """An explicit `mimi_backend="rustymimi"` (`--mimi-backend rustymimi`) where it is not
    installed: one line, never a silent fall-back to MLX."""
    if not rustymimi_available():
        from ..errors import UsageError

        raise UsageError(
            'mimi_backend="rustymimi": the rustymimi package is not installed (pip install rustymimi; '
            'or use mimi_backend="auto" or mimi_backend="mlx")'
        )


class RustyMimi:
    """encode/decode/encode_step/decode_step/reset like `Mimi`, run by rustymimi."""

    backend = "rustymimi"

    def __init__(self, path: str | os.PathLike, num_codebooks: int = MIMI_CODEBOOKS):
        try:
            import rustymimi
        except ImportError:
            raise WeightsError(
                "the rustymimi backend needs the optional package rustymimi, not installed (pip install rustymimi)"
            ) from None
        self.cfg = mimi_202407()
        q = self.cfg.quantizer
        if not isinstance(num_codebooks, int) or not q.n_q_semantic <= num_codebooks <= q.n_q:
            raise UsageError(
                f"num_codebooks must be an integer between {q.n_q_semantic} and {q.n_q}, got {num_codebooks!r}"
            )
        try:
            self._tok = rustymimi.Tokenizer(str(path), num_codebooks=num_codebooks)
        except Exception as e:  # rustymimi raises ValueError with Rust error text
            raise WeightsError(f"rustymimi could not load {path}: {e}".splitlines()[0]) from None
        self._num_codebooks = num_codebooks

    sample_rate = property(lambda self: self.cfg.sample_rate)
    frame_rate = property(lambda self: self.cfg.frame_rate)
    frame_size = property(lambda self: self.cfg.frame_size)
    cardinality = property(lambda self: self.cfg.quantizer.bins)
    total_codebooks = property(lambda self: self.cfg.quantizer.n_q)
    num_codebooks = property(lambda self: self._num_codebooks)

    def _pcm(self, pcm, whole_frames: bool) -> np.ndarray:
        from ..validation import float_pcm  # integer PCM scaled, NaN/inf refused

        x = np.ascontiguousarray(float_pcm("pcm", np.asarray(pcm)))
        if x.ndim != 3 or x.shape[1] != 1:
            raise UsageError(f"expected pcm of shape [B, 1, T] (mono), got {tuple(x.shape)}")
        if whole_frames and (x.shape[2] == 0 or x.shape[2] % self.frame_size):
            raise UsageError(
                f"streaming input must be a positive multiple of {self.frame_size} samples, got {x.shape[2]}"
            )
        if x.shape[2] == 0:
            raise UsageError("cannot encode an empty signal")
        return x

    def _codes(self, codes) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 3:
            raise UsageError(f"expected codes of shape [B, K, T], got {tuple(c.shape)}")
        if not np.issubdtype(c.dtype, np.integer):
            raise UsageError(f"codes must be integers, got {c.dtype}")
        if c.size and (c.min() < 0 or c.max() >= self.cardinality):
            raise UsageError(f"codes must be in [0, {self.cardinality}), got values in [{c.min()}, {c.max()}]")
        return np.ascontiguousarray(c, dtype=np.uint32)

    def encode(self, pcm) -> mx.array:
        x = self._pcm(pcm, whole_frames=False)
        pad = -x.shape[2] % self.frame_size
        if pad:
            x = np.pad(x, [(0, 0), (0, 0), (0, pad)])
        return mx.array(np.asarray(self._tok.encode(x)).astype(np.int32))

    def decode(self, codes) -> mx.array:
        return mx.array(np.asarray(self._tok.decode(self._codes(codes))))

    # rustymimi's step lets the frames of one multi-frame call attend to each other (its
    # codes then differ from frame-by-frame streaming), so steps go one frame at a time.

    def encode_step(self, frame) -> mx.array:
        x, fs = self._pcm(frame, whole_frames=True), self.frame_size
        codes = [
            np.asarray(self._tok.encode_step(np.ascontiguousarray(x[..., i : i + fs])))
            for i in range(0, x.shape[2], fs)
        ]
        return mx.array(np.concatenate(codes, axis=2).astype(np.int32))

    def decode_step(self, codes) -> mx.array:
        c = self._codes(codes)
        if c.shape[2] == 0:
            raise UsageError("decode_step needs at least one frame of codes")
        pcm = [np.asarray(self._tok.decode_step(np.ascontiguousarray(c[..., i : i + 1]))) for i in range(c.shape[2])]
        return mx.array(np.concatenate(pcm, axis=2))

    def reset(self) -> None:
        self._tok.reset()
