"""The depth transformer: predicts one frame's `dep_q` audio codebooks, one after the other.

Step k has its own slice (`depformer.slices.k`: input projection from the temporal
transformer, token embedding, transformer weights, output head), as in the published MLX
layout; a weights-per-step schedule only means some slices hold equal weights. All steps of
a frame share one KV-cache list: step k attends to the keys of steps < k, each computed
with its own slice's weights (the reference's per-step weights do exactly that). The cache
is reset at every frame, so nothing carries over between frames.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from ..modules.embedding import ScaledEmbedding
from ..modules.kv_cache import KVCache
from ..modules.norm import make_norm
from ..modules.step_linear import add_linear
from ..modules.transformer import Transformer, TransformerConfig
from .config import LmConfig


def depformer_transformer_config(cfg: LmConfig, step: int) -> TransformerConfig:
    return TransformerConfig(
        d_model=cfg.depformer_dim,
        num_heads=cfg.dep_num_heads,
        num_layers=cfg.dep_num_layers,
        dim_feedforward=cfg.dep_feedforward(cfg.dep_weight_index(step)),
        causal=cfg.causal,
        context=cfg.depformer_context,
        max_period=cfg.dep_max_period,
        positional_embedding=cfg.depformer_pos_emb,
        norm=cfg.norm,
        gating=cfg.dep_gating,
        activation="gelu",
        layer_scale=cfg.depformer_layer_scale,
        kv_repeat=cfg.dep_kv_repeat,
    )


class DepformerSlice(nn.Module):
    def __init__(self, cfg: LmConfig, step: int):
        super().__init__()
        vocab = cfg.text_card + 1 if step == 0 else cfg.card + 1
        self.linear_in = nn.Linear(cfg.dim, cfg.depformer_dim, bias=False)
        self.emb = ScaledEmbedding(
            vocab,
            cfg.depformer_dim,
            low_rank=cfg.depformer_low_rank_embeddings,
            demux=cfg.demux_second_stream and step == 0,
        )
        self.transformer = Transformer(depformer_transformer_config(cfg, step))
        self.linear_out = nn.Linear(cfg.depformer_dim, cfg.card, bias=False)
        if cfg.depformer_norm is not None:  # Hibiki-Zero: a LayerNorm per step before its head
            self.out_norm = make_norm(cfg.depformer_norm, cfg.depformer_dim)

    def __call__(self, h: mx.array, prev_token: mx.array, cache: list[KVCache], sampled: bool = False) -> mx.array:
        """h [B, T, dim], prev_token [B, T] -> logits [B, T, card]; or one token per row:
        h [B, dim], prev_token [B] -> [B, card]. sampled: prev_token holds sampled tokens
        (never the zero token -1)."""
        x = add_linear(self.linear_in, self.emb(prev_token, zero_tokens=not sampled), h)
        y = self.transformer(x, cache)
        if "out_norm" in self:
            y = self.out_norm(y)
        return self.linear_out(y)


class Depformer(nn.Module):
    def __init__(self, cfg: LmConfig):
        super().__init__()
        self.dep_q = cfg.dep_q
        self.slices = [DepformerSlice(cfg, k) for k in range(cfg.dep_q)]

    def make_cache(self) -> list[KVCache]:
        return self.slices[0].transformer.make_cache()

    def sample(
        self, h: mx.array, text_token: mx.array, cache: list[KVCache], pick: Callable[[int, mx.array], mx.array]
    ) -> mx.array:
        """One frame: h [B', 1, dim] or [B', dim] (B' = B, or 2B under CFG), text_token [B]
        -> audio tokens [B, dep_q]. `pick(k, logits [B', card])` turns step k's logits into
        tokens [B] (it applies CFG and sampling); everything stays on the device."""
        for c in cache:
            c.reset()
        rep = h.shape[0] // text_token.shape[0]
        prev = text_token
        out = []
        for k, sl in enumerate(self.slices):
            inp = mx.concatenate([prev] * rep, axis=0) if rep > 1 else prev
            logits = sl(h, inp, cache, True) if h.ndim == 2 else sl(h, inp[:, None], cache, True)[:, 0]
            prev = pick(k, logits)
            out.append(prev)
        return mx.stack(out, axis=1)

    def teacher_forced(self, h: mx.array, tokens: mx.array) -> mx.array:
        """Training forward: h [B, T, dim], tokens [B, dep_q, T] (step k's input token at
        each position) -> logits [B, dep_q, T, card]. Every position runs the dep_q steps
        in parallel over the batch B*T."""
        B, T, D = h.shape
        hb = h.reshape(B * T, 1, D)
        cache = self.make_cache()
        logits = []
        for k, sl in enumerate(self.slices):
            tok = tokens[:, k].reshape(B * T, 1)
            logits.append(sl(hb, tok, cache).reshape(B, T, -1))
        return mx.stack(logits, axis=1)
