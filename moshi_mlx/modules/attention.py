"""Multi-head self-attention with a fused q/k/v projection (Kyutai layout)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .kv_cache import KVCache, batch_mask
from .rope import apply_rope


class MultiheadAttention(nn.Module):
    """Self-attention whose `in_proj` rows are [q; k; v], heads contiguous, as in the
    published checkpoints. `kv_repeat > 1` is grouped-query attention (fewer k/v heads)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        causal: bool = True,
        context: int | None = None,
        rope: str | None = "rope",
        max_period: float = 10_000.0,
        kv_repeat: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if num_heads % kv_repeat:
            raise ValueError(f"num_heads {num_heads} is not divisible by kv_repeat {kv_repeat}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_kv_heads = num_heads // kv_repeat
        self.head_dim = dim // num_heads
        self.causal = causal
        self.context = context
        self.rope = rope if rope in ("rope", "rope_concat") else None
        self.max_period = max_period
        self.scale = self.head_dim**-0.5
        kv_dim = self.head_dim * self.num_kv_heads
        self.in_proj = nn.Linear(dim, dim + 2 * kv_dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def make_cache(self) -> KVCache:
        return KVCache(self.context)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        B, T, _ = x.shape
        kv_dim = self.head_dim * self.num_kv_heads
        q, k, v = mx.split(self.in_proj(x), [self.dim, self.dim + kv_dim], axis=-1)
        q = self._heads(q, self.num_heads)
        k = self._heads(k, self.num_kv_heads)
        v = self._heads(v, self.num_kv_heads)
        offset = cache.offset if cache is not None else 0
        if self.rope is not None:
            interleave = self.rope == "rope"
            q = apply_rope(q, offset, self.max_period, interleave)
            k = apply_rope(k, offset, self.max_period, interleave)
        if cache is not None:
            k, v, mask = cache.update_and_fetch(k, v)
            if not self.causal:
                mask = None
        else:
            mask = batch_mask(T, self.causal, self.context)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        if T == 1:  # [B, H, 1, D] is already [B, 1, H * D] in memory: one reshape, no transpose
            out = out.reshape(B, T, self.dim)
        else:
            out = out.transpose(0, 2, 1, 3).reshape(B, T, self.dim)
        return self.out_proj(out)

    def _heads(self, x: mx.array, heads: int) -> mx.array:
        """[B, T, heads * D] -> [B, heads, T, D]; for one token a single reshape (a step
        is mostly such small ops, so each one saved counts)."""
        B, T, _ = x.shape
        if T == 1:
            return x.reshape(B, heads, 1, self.head_dim)
        return x.reshape(B, T, heads, self.head_dim).transpose(0, 2, 1, 3)
