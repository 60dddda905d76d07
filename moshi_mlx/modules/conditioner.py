"""Conditioners: look-up tables fused by summation into every input step, and tensor
conditioners (TTS speaker embeddings) that become a cross-attention source.

A LUT conditioner maps one categorical value (e.g. Hibiki's `description = "very_good"`)
to a vector of the model's width: `output_proj(embed[value])`. Like the reference, the
loader keeps these weights in float32 whatever the model's dtype. The null condition (value
None) is the learnt padding vector, as in the reference, which is what classifier-free
guidance contrasts with when no explicit negative value is given.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def _init_projection(m: nn.Module, dim: int, output_dim: int, force_linear: bool, learn_padding: bool) -> None:
    """The part both conditioners share, with the reference's parameter names: an optional
    `output_proj` (dim -> output_dim) and an optional `learnt_padding` (the null condition)."""
    m.has_proj = force_linear or dim != output_dim
    if m.has_proj:
        m.output_proj = nn.Linear(dim, output_dim, bias=False)
    m.has_padding = learn_padding
    if learn_padding:
        m.learnt_padding = mx.random.normal((1, 1, output_dim)) * 0.2
    m.output_dim = output_dim


class LutConditioner(nn.Module):
    def __init__(
        self, n_bins: int, dim: int, output_dim: int, *, force_linear: bool = True, learn_padding: bool = True
    ):
        super().__init__()
        self.n_bins = n_bins
        self.embed = nn.Embedding(n_bins + 1, dim)  # the last row is the padding value
        _init_projection(self, dim, output_dim, force_linear, learn_padding)

    def __call__(self, index: int | None) -> mx.array:
        """[1, 1, output_dim] vector for row `index` (None = the null condition)."""
        if index is None:
            if self.has_padding:
                return self.learnt_padding.astype(mx.float32)
            return mx.zeros((1, 1, self.output_dim))
        y = self.embed.weight[index][None, None]
        if self.has_proj:
            y = self.output_proj(y)
        return y.astype(mx.float32)


class TensorConditioner(nn.Module):
    """A [T, dim] condition with a validity mask -> [T, output_dim]: `output_proj(x)` where
    the mask is set, the learnt padding elsewhere (the reference `TensorConditioner`, whose
    null condition is an all-False mask: padding everywhere)."""

    def __init__(self, dim: int, output_dim: int, *, force_linear: bool = True, learn_padding: bool = True):
        super().__init__()
        self.dim = dim
        _init_projection(self, dim, output_dim, force_linear, learn_padding)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        """x [B, T, dim] (float), mask [B, T] (bool) -> [B, T, output_dim] float32."""
        x = x.astype(mx.float32)
        y = self.output_proj(x).astype(mx.float32) if self.has_proj else x
        m = mask.astype(mx.float32)[..., None]
        pad = self.learnt_padding.astype(mx.float32) if self.has_padding else mx.zeros((1, 1, self.output_dim))
        return y * m + pad * (1.0 - m)


class ConditionProvider(nn.Module):
    """Holds the named conditioners (`conditioners.<name>`); sums the LUT ones."""

    def __init__(self, conditioners: dict[str, "LutConditioner | TensorConditioner"]):
        super().__init__()
        self.conditioners = conditioners

    def condition_sum(self, indices: dict[str, int | None]) -> mx.array:
        """Sum over the named LUT conditioners of their vector for `indices[name]`."""
        total = None
        for name in indices:
            v = self.conditioners[name](indices[name])
            total = v if total is None else total + v
        return total
