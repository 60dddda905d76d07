"""Rotary and sinusoidal positional embeddings (Kyutai conventions)."""

from __future__ import annotations


import mlx.core as mx

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
    """Sinusoidal embedding [1, T, C]: cos on the first half, sin on the second."""
    half = dim // 2
    positions = (mx.arange(length, dtype=mx.float32) + offset)[:, None]
    adim = mx.arange(half, dtype=mx.float32)[None, :]
    phase = positions / (max_period ** (adim / (half - 1)))
    return mx.concatenate([mx.cos(phase), mx.sin(phase)], axis=-1)[None].astype(dtype)


__all__ = ["apply_rope", "sin_embedding", "POSITIONAL_EMBEDDINGS"]
