"""Normalisation layers used by the Moshi transformers.

`RMSNorm` follows Kyutai's `rms_norm_f32`: statistics in float32 whatever the activation
dtype, because bf16 variance over 4096 channels is too coarse for a 32-layer stack.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def _weight_as(m: nn.Module, name: str, dtype: mx.Dtype) -> mx.array:
    """`m[name]` in `dtype`, cast once and kept (recast if the parameter is replaced): a
    cast per call is one more primitive in every step."""
    w = m[name]
    if w.dtype == dtype:
        return w
    key = f"_{name}_as"
    cached = m.__dict__.get(key)
    if cached is None or cached[0] is not w or cached[1].dtype != dtype:
        cached = (w, w.astype(dtype))
        mx.eval(cached[1])
        m.__dict__[key] = cached
    return cached[1]


class RMSNorm(nn.Module):
    """`fused` (the accelerator format, `set_fused_norms`): a bf16/fp16 input goes to the
    fused kernel as it is, which accumulates the statistics in float32 itself; only the
    scaled output is rounded before the weight multiplies it. Two casts fewer per norm,
    two kernels each on a GPU, at the price of that one extra rounding."""

    def __init__(self, dim: int, eps: float = 1e-8, compute_dtype: mx.Dtype | None = mx.float32):
        super().__init__()
        self.weight = mx.ones((dim,))
        self.eps = eps
        self.compute_dtype = compute_dtype
        self.fused = False

    def __call__(self, x: mx.array) -> mx.array:
        if self.compute_dtype is None or x.dtype == self.compute_dtype or self.fused:
            return mx.fast.rms_norm(x, _weight_as(self, "weight", x.dtype), self.eps)
        y = mx.fast.rms_norm(x.astype(self.compute_dtype), _weight_as(self, "weight", self.compute_dtype), self.eps)
        return y.astype(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm with affine weight and bias (PyTorch `nn.LayerNorm` semantics)."""

    def __init__(self, dim: int, eps: float = 1e-5, compute_dtype: mx.Dtype | None = None):
        super().__init__()
        self.weight = mx.ones((dim,))
        self.bias = mx.zeros((dim,))
        self.eps = eps
        self.compute_dtype = compute_dtype

    def __call__(self, x: mx.array) -> mx.array:
        if self.compute_dtype is None or x.dtype == self.compute_dtype:
            return mx.fast.layer_norm(
                x, _weight_as(self, "weight", x.dtype), _weight_as(self, "bias", x.dtype), self.eps
            )
        c = self.compute_dtype
        y = mx.fast.layer_norm(x.astype(c), _weight_as(self, "weight", c), _weight_as(self, "bias", c), self.eps)
        return y.astype(x.dtype)


# name in Kyutai's configs -> (class, eps, compute dtype)
_NORMS = {
    "rms_norm": (RMSNorm, 1e-5, None),
    "rms_norm_f32": (RMSNorm, 1e-8, mx.float32),
    "layer_norm": (LayerNorm, 1e-5, None),
    "layer_norm_f32": (LayerNorm, 1e-8, mx.float32),
}

NORM_TYPES = tuple(_NORMS)


def make_norm(norm_type: str, dim: int) -> nn.Module:
    try:
        cls, eps, dtype = _NORMS[norm_type]
    except KeyError:
        raise ValueError(f"unsupported norm {norm_type!r}; expected one of {', '.join(NORM_TYPES)}") from None
    return cls(dim, eps=eps, compute_dtype=dtype)


def prime_norm_weights(model: nn.Module, activation_dtype: mx.Dtype) -> int:
    """Make every norm's weight cast (to its compute dtype, or the activations' one) now,
    outside any compiled trace, so that traces capture the cast weight as a constant."""
    n = 0
    for _, m in model.named_modules():
        if isinstance(m, (RMSNorm, LayerNorm)):
            dtype = activation_dtype if getattr(m, "fused", False) else m.compute_dtype or activation_dtype
            _weight_as(m, "weight", dtype)
            if isinstance(m, LayerNorm):
                _weight_as(m, "bias", dtype)
            n += 1
    return n


def set_fused_norms(model: nn.Module, on: bool = True) -> int:
    """Switch every `RMSNorm` under `model` to (or back from) its fused format; returns how many."""
    n = 0
    for _, m in model.named_modules():
        if isinstance(m, RMSNorm):
            m.fused = on
            n += 1
    return n
