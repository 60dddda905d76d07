"""Cross-attention from the temporal transformer to a fixed conditioning sequence (TTS speakers).

Layout as in the published TTS checkpoints: per layer `cross_attention.in_proj` [3 dim, dim]
(rows [q; k; v], heads contiguous), `cross_attention.out_proj`, a LayerNorm `norm_cross`
(eps 1e-5, always a LayerNorm, as in the reference) and, with layer scale, `layer_scale_cross`.
No mask and no positional rotation: every query sees every source position (the reference
passes no mask either; masked source positions hold the conditioner's learnt padding).

The source never changes during a generation, so its keys and values are computed once per
layer (`CrossAttention.kv`) and reused at every step, as the reference caches them.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

CrossKV = tuple[mx.array, mx.array]  # keys, values [B, H, S, head_dim]


def _rows(linear: nn.Module, x: mx.array, start: int, stop: int) -> mx.array:
    """`linear(x)` restricted to output rows start:stop, without computing the others
    (float or quantized: packed weights, scales and biases are sliced along the output dim)."""
    if isinstance(linear, nn.QuantizedLinear):
        mode = getattr(linear, "mode", "affine")
        biases = linear["biases"][start:stop] if "biases" in linear else None
        kw = {} if mode == "affine" else {"mode": mode}
        y = mx.quantized_matmul(
            x,
            linear["weight"][start:stop],
            linear["scales"][start:stop],
            biases,
            transpose=True,
            group_size=linear.group_size,
            bits=linear.bits,
            **kw,
        )
    else:
        w = linear.weight
        y = (x.astype(w.dtype) @ w[start:stop].T).astype(x.dtype)
    if "bias" in linear:
        y = y + linear["bias"][start:stop]
    return y


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.in_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: mx.array) -> mx.array:
        B, T, _ = x.shape
        return x.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def kv(self, source: mx.array) -> CrossKV:
        """source [B, S, dim] -> (keys, values), each [B, H, S, head_dim]."""
        kv = _rows(self.in_proj, source, self.dim, 3 * self.dim)
        return self._heads(kv[..., : self.dim]), self._heads(kv[..., self.dim :])

    def __call__(self, x: mx.array, kv: CrossKV) -> mx.array:
        """x [B, T, dim] (already normed) attends to the source -> [B, T, dim]."""
        B, T, _ = x.shape
        q = self._heads(_rows(self.in_proj, x, 0, self.dim))
        k, v = kv
        if k.shape[0] != B:  # one source shared by every row of the batch
            k, v = mx.broadcast_to(k, (B,) + k.shape[1:]), mx.broadcast_to(v, (B,) + v.shape[1:])
        out = mx.fast.scaled_dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), scale=self.scale)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, T, self.dim))


def add_cross_attention(layer: nn.Module, dim: int, num_heads: int, layer_scale: float | None) -> None:
    """Give a transformer layer its cross-attention block (names as in the checkpoints)."""
    from .norm import LayerNorm

    layer.cross_attention = CrossAttention(dim, num_heads)
    layer.norm_cross = LayerNorm(dim, eps=1e-5)
    if layer_scale is not None:
        from .transformer import LayerScale

        layer.layer_scale_cross = LayerScale(dim, layer_scale)


def cross_attention_residual(layer: nn.Module, x: mx.array, kv: CrossKV) -> mx.array:
    """x + (layer scale of) cross-attention(norm_cross(x)), the block between the layer's
    self-attention and its feed-forward."""
    update = layer.cross_attention(layer.norm_cross(x), kv)
    if "layer_scale_cross" in layer:
        update = layer.layer_scale_cross(update)
    return x + update
