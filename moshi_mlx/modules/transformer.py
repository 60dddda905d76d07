"""Pre-norm streaming transformer shared by Helium, the depformer and Mimi.

Parameter names follow the published checkpoints (`self_attn.in_proj`, `norm1`, `gating.
linear_in` for gated MLPs, `linear1`/`linear2` for plain ones, `layer_scale_1.scale`), so
loading is a rename of a few legacy suffixes, not a re-architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .attention import MultiheadAttention
from .cross_attention import CrossKV, add_cross_attention, cross_attention_residual
from .kv_cache import KVCache
from .mlp import GatedMLP, activation
from .norm import make_norm
from .rope import POSITIONAL_EMBEDDINGS, sin_embedding
from .step_linear import add_linear


@dataclass
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    causal: bool = True
    context: int | None = None
    max_period: float = 10_000.0
    positional_embedding: str = "rope"
    norm: str = "rms_norm_f32"
    gating: str = "silu"  # "none" = plain MLP with `activation`
    activation: str = "gelu"
    layer_scale: float | None = None
    kv_repeat: int = 1
    bias_attn: bool = False
    bias_ff: bool = False
    cross_attention: bool = False  # TTS: a cross-attention block per layer (modules/cross_attention.py)

    def __post_init__(self):
        if self.positional_embedding not in POSITIONAL_EMBEDDINGS:
            raise ValueError(
                f"unsupported positional_embedding {self.positional_embedding!r}; "
                f"expected one of {', '.join(POSITIONAL_EMBEDDINGS)}"
            )
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = mx.full((dim,), init)

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.scale


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        rope = cfg.positional_embedding if cfg.positional_embedding in ("rope", "sin_rope", "rope_concat") else None
        if rope == "sin_rope":
            rope = "rope"
        self.self_attn = MultiheadAttention(
            cfg.d_model,
            cfg.num_heads,
            causal=cfg.causal,
            context=cfg.context,
            rope=rope,
            max_period=cfg.max_period,
            kv_repeat=cfg.kv_repeat,
            bias=cfg.bias_attn,
        )
        self.norm1 = make_norm(cfg.norm, cfg.d_model)
        self.norm2 = make_norm(cfg.norm, cfg.d_model)
        self.gated = cfg.gating != "none"
        if self.gated:
            self.gating = GatedMLP(cfg.d_model, cfg.dim_feedforward, cfg.gating, bias=cfg.bias_ff)
        else:
            self._act = activation(cfg.activation)
            self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward, bias=cfg.bias_ff)
            self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model, bias=cfg.bias_ff)
        if cfg.layer_scale is not None:
            self.layer_scale_1 = LayerScale(cfg.d_model, cfg.layer_scale)
            self.layer_scale_2 = LayerScale(cfg.d_model, cfg.layer_scale)
        self.has_layer_scale = cfg.layer_scale is not None
        if cfg.cross_attention:
            add_cross_attention(self, cfg.d_model, cfg.num_heads, cfg.layer_scale)

    def feed_forward(self, x: mx.array, residual: mx.array | None = None) -> mx.array:
        if self.gated:
            return self.gating(x, residual)
        h = self._act(self.linear1(x))
        return add_linear(self.linear2, residual, h)

    def __call__(self, x: mx.array, cache: KVCache | None = None, cross: CrossKV | None = None) -> mx.array:
        if self.has_layer_scale:
            x = x + self.layer_scale_1(self.self_attn(self.norm1(x), cache))
        else:  # the residual add goes into the out projection's matmul (StepLinear.add_to)
            x = self.self_attn(self.norm1(x), cache, residual=x)
        if cross is not None:
            x = cross_attention_residual(self, x, cross)
        if self.has_layer_scale:
            return x + self.layer_scale_2(self.feed_forward(self.norm2(x)))
        return self.feed_forward(self.norm2(x), residual=x)


class Transformer(nn.Module):
    """A stack of `TransformerLayer`s.

    Called without a cache it sees the whole sequence at once (positions from 0, causal
    mask with the context window); with the list from `make_cache()` it streams, any number
    of steps per call, and batch and streaming results agree.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]

    def make_cache(self) -> list[KVCache]:
        return [layer.self_attn.make_cache() for layer in self.layers]

    def cross_kv(self, source: mx.array) -> list[CrossKV]:
        """Per-layer keys/values of a cross-attention source [B, S, d_model] (computed once)."""
        return [layer.cross_attention.kv(source) for layer in self.layers]

    def __call__(self, x: mx.array, cache: list[KVCache] | None = None, cross: list[CrossKV] | None = None) -> mx.array:
        """cross: `cross_kv(source)`, required by (and only for) cross-attention layers."""
        if self.cfg.positional_embedding in ("sin", "sin_rope"):
            offset = cache[0].offset if cache else 0
            if x.ndim == 2:  # one token per row
                x = x + sin_embedding(offset, 1, x.shape[1], self.cfg.max_period, x.dtype)[0]
            else:
                x = x + sin_embedding(offset, x.shape[1], x.shape[2], self.cfg.max_period, x.dtype)
        if self.cfg.cross_attention != (cross is not None):
            raise ValueError("cross-attention layers need `cross` (Transformer.cross_kv), other layers refuse it")
        if cache is None:
            for i, layer in enumerate(self.layers):
                x = layer(x, None, cross[i] if cross else None)
        else:
            for i, (layer, c) in enumerate(zip(self.layers, cache)):
                x = layer(x, c, cross[i] if cross else None)
        return x
