"""Token sampling on the device: temperature, top-k, top-p, greedy at temperature 0.

Each call takes an explicit PRNG key, so a generator with a seed is reproducible and
nothing global is touched. top-k and top-p may be combined (top-k is applied first).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from .. import validation as check


@dataclass(frozen=True)
class Sampler:
    temp: float = 0.8
    top_k: int = 0  # 0 = off
    top_p: float = 0.0  # 0 = off

    def __post_init__(self):
        # NaN would pass `< 0` and make every token the last id: refused by the shared checks
        object.__setattr__(self, "temp", check.temperature("temperature", self.temp))
        object.__setattr__(self, "top_k", check.top_k("top_k", self.top_k))
        object.__setattr__(self, "top_p", check.top_p("top_p", self.top_p))

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0

    def __call__(self, logits: mx.array, key: mx.array | None) -> mx.array:
        """logits [B, V] -> tokens [B] (int32)."""
        if self.greedy:
            return _as_int32(mx.argmax(logits, axis=-1))
        V = logits.shape[-1]
        neg = mx.array(-float("inf"), dtype=mx.float32)
        kth = None
        if 0 < self.top_k < V:  # the k-th largest logit, read off a partition (no sort) of the
            # raw logits: dividing by a positive temperature keeps their order (and ties)
            kth = mx.partition(logits, V - self.top_k, axis=-1)[:, V - self.top_k : V - self.top_k + 1]
        tempered = logits.astype(mx.float32) / self.temp
        if kth is not None:  # one fused pass with the tempering and the draw below
            tempered = mx.where(logits < kth, neg, tempered)
        logits = tempered
        if 0.0 < self.top_p < 1.0:
            order = mx.argsort(-logits, axis=-1)
            sorted_logits = mx.take_along_axis(logits, order, axis=-1)
            probs = mx.softmax(sorted_logits, axis=-1)
            before = mx.cumsum(probs, axis=-1) - probs  # mass strictly above each token
            sorted_logits = mx.where(before > self.top_p, neg, sorted_logits)
            choice = gumbel_max(sorted_logits, key)
            return mx.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(mx.int32)
        return gumbel_max(logits, key)


def gumbel_max(logits: mx.array, key: mx.array | None) -> mx.array:
    """One exact draw from softmax(logits) per row [B, V] -> [B] (int32): the argmax of the
    logits plus Gumbel noise. In a compiled step that is three kernels (noise bits, one fused
    elementwise pass, argmax) where `mx.random.categorical`'s inverse CDF takes eight."""
    return _as_int32(mx.argmax(logits + mx.random.gumbel(logits.shape, key=key), axis=-1))


def _as_int32(index: mx.array) -> mx.array:
    """argmax's uint32 indices as int32, reinterpreted in place (a vocabulary index is far
    below 2**31): no conversion kernel per sampled token."""
    return mx.view(index, mx.int32)


def check_text_sampling(temp: float | None, top_k: int | None, top_p: float | None) -> None:
    """Sampling values as one-line usage errors (before anything is loaded)."""
    if temp is not None:
        check.temperature("temperature", temp)
    if top_k is not None:
        check.top_k("top-k", top_k)
    if top_p is not None:
        check.top_p("top-p", top_p)
