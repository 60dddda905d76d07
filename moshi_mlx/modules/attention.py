"""Multi-head self-attention with a fused q/k/v projection (Kyutai layout)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .kv_cache import BaseCache, KVCache, batch_mask
from .rope import apply_rope
from .step_linear import add_linear


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

    def __call__(self, x: mx.array, cache: BaseCache | None = None, residual: mx.array | None = None) -> mx.array:
        """x [B, T, dim] -> [B, T, dim]; or x [B, dim], one token per row (the compiled
        step: a matmul of a 3-d input costs a flatten and an unflatten around it).
        residual: added to the output (with the out projection's matmul where it allows)."""
        if x.ndim == 2:
            return add_linear(self.out_proj, residual, self._one_token_rows(x, cache))
        B, T, _ = x.shape
        offset = cache.offset if cache is not None else 0
        if T == 1:
            q, k, v = self._one_token_qkv(x, offset)
        else:  # heads first; q and k heads rotate in one RoPE call, as for one token
            H, Hk = self.num_heads, self.num_kv_heads
            qkv = self.in_proj(x).reshape(B, T, H + 2 * Hk, self.head_dim).transpose(0, 2, 1, 3)
            if self.rope is None:
                q, k, v = mx.split(qkv, [H, H + Hk], axis=1)
            else:
                qk, v = mx.split(qkv, [H + Hk], axis=1)
                q, k = mx.split(apply_rope(qk, offset, self.max_period, self.rope == "rope"), [H], axis=1)
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
        return add_linear(self.out_proj, residual, out)

    def _one_token_rows(self, x: mx.array, cache: BaseCache) -> mx.array:
        if cache is None:
            raise ValueError("one-token rows [B, dim] need a cache")
        if self.rope is None and cache.fused_kv:
            # keys and values stay side by side as the projection made them: one append, not two
            B, H = x.shape[0], self.num_heads
            q, kv = mx.split(self.in_proj(x).reshape(B, H + 2 * self.num_kv_heads, 1, self.head_dim), [H], axis=1)
            k, v, mask = cache.update_and_fetch_kv(kv, self.num_kv_heads)
        else:
            q, k, v = self._one_token_qkv(x, cache.offset)
            k, v, mask = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask if self.causal else None)
        return out.reshape(x.shape[0], self.dim)

    def _one_token_qkv(self, x: mx.array, offset) -> tuple[mx.array, mx.array, mx.array]:
        """q, k, v [B, heads, 1, D] for one token: the projection is already [B, heads, 1, D]
        in memory (one reshape, no transposes), and q and k heads rotate in one RoPE call (a
        step is mostly such small ops, so each one saved counts)."""
        B = x.shape[0]
        H, Hk = self.num_heads, self.num_kv_heads
        qkv = self.in_proj(x).reshape(B, H + 2 * Hk, 1, self.head_dim)
        if self.rope is None:
            q, k, v = mx.split(qkv, [H, H + Hk], axis=1)
            return q, k, v
        qk, v = mx.split(qkv, [H + Hk], axis=1)
        qk = apply_rope(qk, offset, self.max_period, self.rope == "rope")
        q, k = mx.split(qk, [H], axis=1)
        return q, k, v
