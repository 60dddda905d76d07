"""Rotary and sinusoidal positional embeddings (Kyutai conventions)."""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

POSITIONAL_EMBEDDINGS = ("none", "rope", "rope_concat", "sin", "sin_rope")


def apply_rope(x: mx.array, offset: int | mx.array, max_period: float, interleave: bool) -> mx.array:
    """Rotate `x` [B, H, T, D] for positions offset..offset+T-1 (`offset` an int, or a
    scalar array in a compiled step).

    Interleaved pairs (r0, i0, r1, i1, ...) are MLX's `traditional=True` layout; Kyutai's
    `rope_concat` (halves) is `traditional=False`. Frequencies are max_period^(-2i/D), as in
    the reference.
    """
    d = x.shape[-1]
    return mx.fast.rope(x, d, traditional=interleave, base=float(max_period), scale=1.0, offset=offset)


def sin_embedding(offset: int | mx.array, length: int, dim: int, max_period: float, dtype=mx.float32) -> mx.array:
    """Sinusoidal embedding [1, T, C]: cos on the first half, sin on the second.

    One position at a Python int offset (the depformer's steps, a fixed number per frame)
    is a row made once on the host (in float64, then rounded): in a compiled step it is a
    constant, not a dozen graph nodes per step."""
    if isinstance(offset, int) and length == 1:
        return _sin_table(offset, length, dim, float(max_period), dtype)
    return _sin_embedding(offset, length, dim, max_period, dtype)


@functools.lru_cache(maxsize=256)
def _sin_table(offset: int, length: int, dim: int, max_period: float, dtype) -> mx.array:
    half = dim // 2
    positions = np.arange(offset, offset + length, dtype=np.float64)[:, None]
    adim = np.arange(half, dtype=np.float64)[None, :]
    phase = positions / (max_period ** (adim / (half - 1)))
    table = np.concatenate([np.cos(phase), np.sin(phase)], axis=-1)[None].astype(np.float32)
    return mx.array(table).astype(dtype)


def _sin_embedding(offset: mx.array, length: int, dim: int, max_period: float, dtype) -> mx.array:
    half = dim // 2
    positions = (mx.arange(length, dtype=mx.float32) + offset)[:, None]
    adim = mx.arange(half, dtype=mx.float32)[None, :]
    phase = positions / (max_period ** (adim / (half - 1)))
    return mx.concatenate([mx.cos(phase), mx.sin(phase)], axis=-1)[None].astype(dtype)


__all__ = ["apply_rope", "sin_embedding", "POSITIONAL_EMBEDDINGS"]
