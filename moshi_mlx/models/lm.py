"""Moshi's language model: Helium (the temporal transformer) + text head + depformer.

Streams: index 0 is text, 1..dep_q the model's own audio codebooks (generated),
dep_q+1..n_q the user's / source audio (fed in). Parameter names are the published MLX
layout (`text_emb`, `audio_embs.N`, `transformer.layers.L...`, `out_norm`, `text_linear`,
`depformer.slices.K...`, `condition_provider.conditioners.<name>...`, `extra_heads.N`).

Token alignment is the training one (`LMModel.forward` of the reference): position p
consumes, for every stream k, the token of frame p - 1 - delay[k] (the initial token while
that is negative) and predicts the text of frame p and audio codebook k of frame
p - delay[k].
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..modules.conditioner import ConditionProvider, LutConditioner, TensorConditioner
from ..modules.cross_attention import CrossKV
from ..modules.embedding import ScaledEmbedding, StackedEmbeddings
from ..modules.kv_cache import KVCache
from ..modules.norm import make_norm
from ..modules.rope import sin_embedding
from ..modules.transformer import Transformer, TransformerConfig
from ..errors import WeightsError
from .config import LmConfig, TensorConditionerConfig
from .depformer import Depformer


def temporal_transformer_config(cfg: LmConfig) -> TransformerConfig:
    return TransformerConfig(
        d_model=cfg.dim,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_layers,
        dim_feedforward=int(cfg.hidden_scale * cfg.dim),
        causal=cfg.causal,
        context=cfg.context,
        max_period=cfg.max_period,
        positional_embedding=cfg.positional_embedding,
        norm=cfg.norm,
        gating=cfg.gating,
        activation="gelu",
        layer_scale=cfg.layer_scale,
        kv_repeat=cfg.kv_repeat,
        cross_attention=cfg.cross_attention,
    )


@dataclass
class LmOutput:
    """Teacher-forced outputs aligned with the input codes (frame f's prediction at f).
    Invalid entries (a delayed codebook's last frames, zero tokens) are NaN and masked."""

    text_logits: mx.array  # [B, T, text_out_card]
    text_mask: mx.array  # [B, T] bool
    audio_logits: mx.array | None  # [B, dep_q, T, card]
    audio_mask: mx.array | None  # [B, dep_q, T] bool


class Lm(nn.Module):
    def __init__(self, cfg: LmConfig):
        super().__init__()
        self.cfg = cfg
        self.text_emb = ScaledEmbedding(cfg.text_card + 1, cfg.dim, demux=cfg.demux_second_stream)
        self.audio_embs = [ScaledEmbedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)]
        self.transformer = Transformer(temporal_transformer_config(cfg))
        self.out_norm = make_norm(cfg.norm, cfg.dim)
        self.text_linear = nn.Linear(cfg.dim, cfg.text_out_card, bias=False)
        if cfg.dep_q > 0:
            self.depformer = Depformer(cfg)
        if cfg.conditioners:
            self.condition_provider = ConditionProvider(
                {
                    name: TensorConditioner(c.dim, cfg.dim, force_linear=c.force_linear, learn_padding=c.learn_padding)
                    if isinstance(c, TensorConditionerConfig)
                    else LutConditioner(
                        c.n_bins, c.dim, cfg.dim, force_linear=c.force_linear, learn_padding=c.learn_padding
                    )
                    for name, c in cfg.conditioners.items()
                }
            )
        if cfg.extra_heads_num_heads:
            self.extra_heads = [
                nn.Linear(cfg.dim, cfg.extra_heads_dim, bias=False) for _ in range(cfg.extra_heads_num_heads)
            ]

    # ---- pieces ---------------------------------------------------------------------
    @property
    def has_depformer(self) -> bool:
        return self.cfg.dep_q > 0

    @property
    def dtype(self) -> mx.Dtype:
        """The float dtype the weights were loaded in: what activations compute in unless
        a `ComputeFormat` says otherwise (`models.backend.prepare_lm`)."""
        return self.out_norm.weight.dtype

    def make_cache(self) -> list[KVCache]:
        return self.transformer.make_cache()

    def condition_tensor(self, values: dict[str, str | None] | None) -> mx.array | None:
        """Sum of the conditioners' outputs [1, 1, dim] (float32), or None without conditioners.

        values: conditioner name -> value (None = that conditioner's null condition)."""
        if not self.cfg.conditioners:
            if values:
                raise WeightsError(f"this model has no conditioners; got conditions {sorted(values)}")
            return None
        values = dict(values or {})
        unknown = set(values) - set(self.cfg.conditioners)
        if unknown:
            raise WeightsError(f"unknown condition(s) {sorted(unknown)}; the model has {sorted(self.cfg.conditioners)}")
        missing = set(self.cfg.fuse_sum) - set(values)
        if missing:
            raise WeightsError(f"missing condition value(s) for {sorted(missing)} (pass None for the null condition)")
        idx = {n: self.cfg.conditioners[n].index(values[n]) for n in self.cfg.fuse_sum}
        idx = {n: (None if values[n] is None else i) for n, i in idx.items()}
        return self.condition_provider.condition_sum(idx)

    def cross_source(self, tensors: dict[str, tuple[mx.array, mx.array]]) -> mx.array:
        """The cross-attention source [B, S, dim] (float32) from the `fuse_cross` conditions.

        tensors: name -> (tensor [B, T, cond dim], mask [B, T] bool); an all-False mask is
        that condition's null value. Conditions are concatenated along time, then a
        sinusoidal position embedding is added when the config asks for it (the reference
        `ConditionFuser.get_cross`)."""
        cfg = self.cfg
        missing = set(cfg.fuse_cross) - set(tensors)
        if missing:
            raise WeightsError(f"missing tensor condition(s) {sorted(missing)}")
        parts = [self.condition_provider.conditioners[n](*tensors[n]) for n in cfg.fuse_cross]
        src = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        if cfg.cross_attention_pos_emb:
            src = src + cfg.cross_attention_pos_emb_scale * sin_embedding(0, src.shape[1], src.shape[2], 10_000.0)
        return src

    def cross_kv(self, source: mx.array, dtype: mx.Dtype | None = None) -> list[CrossKV]:
        """Per-layer keys/values of a cross-attention source, computed once per generation
        (dtype: the activation dtype, default the weights')."""
        return self.transformer.cross_kv(source.astype(dtype if dtype is not None else self.dtype))

    def embed(
        self, tokens: mx.array, dtype: mx.Dtype | None = None, audio_stack: StackedEmbeddings | None = None
    ) -> mx.array:
        """tokens [B, 1 + n_q, T] -> summed embeddings [B, T, dim] (tokens [B, 1 + n_q]: one
        position per row -> [B, dim]), in the activation `dtype` (None: the tables'; every
        layer after this computes in the dtype of its input). audio_stack: the audio tables
        as one gather (`ComputeFormat.audio_stack`), used while it is current."""
        act = dtype

        def lookup(emb, ids):
            y = emb(ids)
            return y if act is None else y.astype(act)

        x = lookup(self.text_emb, tokens[:, 0])
        stack = audio_stack
        if stack is not None and stack.current(self.audio_embs):
            ys = stack(tokens[:, 1:])
            ys = ys if act is None else ys.astype(act)
            x = mx.expand_dims(x, 1)
            for y in mx.split(ys, len(self.audio_embs), axis=1):  # the same additions, in the same order
                x = x + y
            return mx.squeeze(x, 1)
        for k, emb in enumerate(self.audio_embs):
            x = x + lookup(emb, tokens[:, 1 + k])
        return x

    def forward_text(
        self,
        tokens: mx.array,
        condition: mx.array | None = None,
        cache: list[KVCache] | None = None,
        cross: list[CrossKV] | None = None,
        *,
        dtype: mx.Dtype | None = None,
        audio_stack: StackedEmbeddings | None = None,
    ) -> tuple[mx.array, mx.array]:
        """tokens [B, 1 + n_q, T] -> (normed hidden [B, T, dim], text logits [B, T, text_out_card]);
        tokens [B, 1 + n_q] (one position per row, with a cache) -> [B, dim], [B, text_out_card],
        with `condition` [B, dim]. cross: `cross_kv(...)` for cross-attention (TTS) models.
        dtype, audio_stack: the compute format's (see `embed`)."""
        x = self.embed(tokens, dtype, audio_stack)
        if condition is not None:
            x = x + condition.astype(x.dtype)
        h = self.out_norm(self.transformer(x, cache, cross) if cross is not None else self.transformer(x, cache))
        return h, self.text_linear(h)

    # ---- teacher-forced batch forward (training convention) ---------------------------
    def initial_tokens(self) -> np.ndarray:
        cfg = self.cfg
        return np.array([cfg.text_initial_token] + [cfg.audio_initial_token] * cfg.n_q, dtype=np.int64)

    def delayed_inputs(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """codes [B, K, T] (undelayed frames) -> (model inputs [B, K, T], delayed codes [B, K, T])."""
        B, K, T = codes.shape
        init = self.initial_tokens()
        delayed = np.empty_like(codes)
        for k, d in enumerate(self.cfg.delays):
            d = min(d, T)
            delayed[:, k, :d] = init[k]
            delayed[:, k, d:] = codes[:, k, : T - d]
        inputs = np.concatenate([np.broadcast_to(init[None, :, None], (B, K, 1)), delayed[:, :, :-1]], axis=2)
        return inputs, delayed

    def forward_train(
        self,
        codes,
        condition: dict[str, str | None] | None = None,
        cross: list[CrossKV] | None = None,
        *,
        dtype: mx.Dtype | None = None,
    ) -> LmOutput:
        """Teacher-forced logits for codes [B, 1 + n_q, T] (ints, -1 = zero token), as the
        reference `LMModel.forward`: text logits and, through the depformer fed the true
        previous codebooks, per-codebook audio logits, both realigned with `codes`
        (dtype: the activation dtype, default the weights')."""
        cfg = self.cfg
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 3 or codes.shape[1] != cfg.num_streams:
            raise ValueError(f"codes must be [B, {cfg.num_streams}, T], got {codes.shape}")
        B, K, T = codes.shape
        inputs, delayed = self.delayed_inputs(codes)
        cond = self.condition_tensor(condition) if cfg.conditioners else None
        h, text_logits = self.forward_text(mx.array(inputs), cond, None, cross, dtype=dtype)
        text_logits, text_mask = _undelay(text_logits[:, None], [cfg.delays[0]])
        text_mask = text_mask & mx.array(codes[:, :1] != -1)
        audio_logits = audio_mask = None
        if self.has_depformer:
            dep_in = mx.array(delayed[:, : cfg.dep_q])  # step k input: stream k (0 = text)
            logits = self.depformer.teacher_forced(h, dep_in)
            audio_logits, audio_mask = _undelay(logits, cfg.delays[1 : 1 + cfg.dep_q])
            audio_mask = audio_mask & mx.array(codes[:, 1 : 1 + cfg.dep_q] != -1)
        return LmOutput(text_logits[:, 0], text_mask[:, 0], audio_logits, audio_mask)


def _undelay(logits: mx.array, delays: list[int]) -> tuple[mx.array, mx.array]:
    """logits [B, S, T, V] predicted at positions -> aligned with frames (frame f = position
    f + delay); the last `delay` frames have no prediction (NaN, mask False)."""
    B, S, T, V = logits.shape
    outs, masks = [], []
    for s, d in enumerate(delays):
        line = logits[:, s]
        if d:
            line = mx.concatenate([line[:, d:], mx.full((B, d, V), float("nan"), dtype=line.dtype)], axis=1)
        outs.append(line)
        m = np.ones((B, T), dtype=bool)
        if d:
            m[:, T - d :] = False
        masks.append(m)
    return mx.stack(outs, axis=1), mx.array(np.stack(masks, axis=1))
