"""Token embeddings with Kyutai's conventions, and their quantized twin.

- token -1 (the "zero token") embeds to an exact zero vector: a stream that says nothing;
- `low_rank`: the table has width r and a bias-free Linear(r, dim) follows;
- `demux`: a token is `(second + 1) * num_embeddings + first` and embeds as
  `out1(E[first]) + out2(E[second])` (the second term dropped when second = -1).

The quantized twin keeps all three rules (MLX's own `QuantizedEmbedding` would lose the
zero token), so a quantized model still accepts -1 anywhere.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

ZERO_TOKEN = -1


class _EmbeddingBase(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, low_rank: int | None, demux: bool):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.table_dim = low_rank or dim
        self.demux = demux
        self.has_low_rank = low_rank is not None
        if low_rank is not None:
            self.low_rank = nn.Linear(low_rank, dim, bias=False)
        if demux:
            self.out1 = nn.Linear(self.table_dim, dim, bias=False)
            self.out2 = nn.Linear(self.table_dim, dim, bias=False)

    def lookup(self, ids: mx.array) -> mx.array:
        raise NotImplementedError

    def __call__(self, ids: mx.array, zero_tokens: bool = True) -> mx.array:
        """zero_tokens=False: the caller knows no id is -1 (a sampled token), so the
        zero-token test is skipped (three kernels fewer per lookup on a GPU)."""
        is_zero = (ids == ZERO_TOKEN)[..., None] if zero_tokens else None
        if zero_tokens:
            ids = mx.maximum(ids, 0)
        if self.demux:
            first = ids % self.num_embeddings
            second = ids // self.num_embeddings - 1
            y = self.out1(self.lookup(first))
            y2 = self.out2(self.lookup(mx.maximum(second, 0)))
            y = y + mx.where((second < 0)[..., None], mx.zeros_like(y2), y2)
            return y if is_zero is None else mx.where(is_zero, mx.zeros_like(y), y)
        y = self.lookup(ids)
        if is_zero is not None:
            y = mx.where(is_zero, mx.zeros_like(y), y)
        if self.has_low_rank:
            y = self.low_rank(y)
        return y


class ScaledEmbedding(_EmbeddingBase):
    """Embedding table `weight` [num_embeddings, low_rank or dim] (+ `low_rank`, `out1`, `out2`)."""

    def __init__(self, num_embeddings: int, dim: int, *, low_rank: int | None = None, demux: bool = False):
        super().__init__(num_embeddings, dim, low_rank, demux)
        self.weight = mx.random.normal((num_embeddings, self.table_dim)) * (self.table_dim**-0.5)

    def lookup(self, ids: mx.array) -> mx.array:
        return self.weight[ids]

    def quantized_twin(self, group_size: int, bits: int, mode: str = "affine") -> "QuantizedScaledEmbedding":
        """A quantized table of this one's shapes, holding its children (`low_rank`, `out1`,
        `out2`, quantized separately) and zero placeholders for the table: the values come
        from a checkpoint (weights/quantize.py) or from `to_quantized`."""
        q = QuantizedScaledEmbedding(
            self.num_embeddings,
            self.dim,
            group_size=group_size,
            bits=bits,
            mode=mode,
            low_rank=self.table_dim if self.has_low_rank else None,
            demux=self.demux,
        )
        for name in ("low_rank", "out1", "out2"):
            if name in self:
                q[name] = self[name]
        return q

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> "QuantizedScaledEmbedding":
        """The quantized twin of this table (children are quantized separately)."""
        q = self.quantized_twin(group_size, bits, mode)
        packed = mx.quantize(self.weight, group_size, bits, mode=mode)
        q.weight, q.scales = packed[0], packed[1]
        if mode == "affine":
            q.biases = packed[2]
        return q


class QuantizedScaledEmbedding(_EmbeddingBase):
    """`ScaledEmbedding` whose table is quantized (`weight` packed uint32, `scales`, and
    `biases` in the affine mode; MLX's fp modes have uint8 scales and no biases)."""

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        *,
        group_size: int,
        bits: int,
        low_rank: int | None = None,
        demux: bool = False,
        mode: str = "affine",
    ):
        super().__init__(num_embeddings, dim, low_rank, demux)
        self.group_size = group_size
        self.bits = bits
        self.mode = mode
        table_dim = self.table_dim
        # placeholders with the packed shapes; real values come from a checkpoint or to_quantized
        self.weight = mx.zeros((num_embeddings, table_dim * bits // 32), dtype=mx.uint32)
        if mode == "affine":
            self.scales = mx.zeros((num_embeddings, table_dim // group_size))
            self.biases = mx.zeros((num_embeddings, table_dim // group_size))
        else:
            self.scales = mx.zeros((num_embeddings, table_dim // group_size), dtype=mx.uint8)
        self.freeze()

    def lookup(self, ids: mx.array) -> mx.array:
        if self.mode == "affine":
            return mx.dequantize(
                self.weight[ids], self.scales[ids], self.biases[ids], group_size=self.group_size, bits=self.bits
            )
        return mx.dequantize(
            self.weight[ids], self.scales[ids], group_size=self.group_size, bits=self.bits, mode=self.mode
        )


class StackedEmbeddings:
    """Same-shape plain tables (a model's audio streams) looked up by one gather.

    Each stream's lookup costs a handful of graph nodes (zero-token test, clamp, gather,
    select), and Moshi embeds 16 audio streams per step. The tables are concatenated once
    and each original parameter becomes a view of its rows, so memory is unchanged and a
    checkpoint still saves under the same names; the result is the per-table lookup's, row
    for row. `current()` says whether the tables still hold those views (a reload makes
    the stack stale)."""

    def __init__(self, tables: list[_EmbeddingBase]):
        self.tables = list(tables)
        self.num_embeddings = tables[0].num_embeddings
        self.names = (
            ("weight", "scales", "biases")
            if "biases" in tables[0]
            else (("weight", "scales") if "scales" in tables[0] else ("weight",))
        )
        first = tables[0]
        self.quant = (first.group_size, first.bits, first.mode) if isinstance(first, QuantizedScaledEmbedding) else None
        n = self.num_embeddings
        self.stacked = {k: mx.concatenate([t[k] for t in tables], axis=0) for k in self.names}
        mx.eval(self.stacked)
        for i, t in enumerate(tables):
            for k in self.names:
                t[k] = self.stacked[k][i * n : (i + 1) * n]
                mx.eval(t[k])
        self._views = [[t[k] for k in self.names] for t in tables]
        self._starts = np.arange(len(tables), dtype=np.int32) * n

    @staticmethod
    def stackable(tables: list[_EmbeddingBase]) -> bool:
        if len(tables) < 2:
            return False
        first = tables[0]

        def key(t):
            q = (t.group_size, t.bits, t.mode) if isinstance(t, QuantizedScaledEmbedding) else None
            return (type(t), t.num_embeddings, t.dim, t.has_low_rank, t.demux, q, t["weight"].dtype)

        return not first.has_low_rank and not first.demux and all(key(t) == key(first) for t in tables)

    def current(self, tables: list[_EmbeddingBase]) -> bool:
        return len(tables) == len(self.tables) and all(
            t is s and all(t[k] is v for k, v in zip(self.names, views))
            for t, s, views in zip(tables, self.tables, self._views)
        )

    def __call__(self, ids: mx.array) -> mx.array:
        """ids [B, n, ...] (stream i's tokens at [:, i]) -> [B, n, ..., dim]."""
        starts = mx.array(self._starts.reshape((-1,) + (1,) * (ids.ndim - 2)))
        is_zero = (ids == ZERO_TOKEN)[..., None]
        rows = mx.maximum(ids, 0) + starts
        s = self.stacked
        if self.quant is None:
            y = s["weight"][rows]
        else:
            group_size, bits, mode = self.quant
            y = mx.dequantize(
                s["weight"][rows],
                s["scales"][rows],
                s["biases"][rows] if "biases" in s else None,
                group_size=group_size,
                bits=bits,
                mode=mode,
            )
        return mx.where(is_zero, mx.zeros_like(y), y)
