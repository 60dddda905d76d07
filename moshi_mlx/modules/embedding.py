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

    def __call__(self, ids: mx.array) -> mx.array:
        is_zero = (ids == ZERO_TOKEN)[..., None]
        ids = mx.maximum(ids, 0)
        if self.demux:
            first = ids % self.num_embeddings
            second = ids // self.num_embeddings - 1
            y = self.out1(self.lookup(first))
            y2 = self.out2(self.lookup(mx.maximum(second, 0)))
            y = y + mx.where((second < 0)[..., None], mx.zeros_like(y2), y2)
            return mx.where(is_zero, mx.zeros_like(y), y)
        y = self.lookup(ids)
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

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> "QuantizedScaledEmbedding":
        """The quantized twin of this table (children are quantized separately)."""
        q = QuantizedScaledEmbedding(self.num_embeddings, self.dim, group_size=group_size, bits=bits, mode=mode,
                                     low_rank=self.table_dim if self.has_low_rank else None, demux=self.demux)
        packed = mx.quantize(self.weight, group_size, bits, mode=mode)
        q.weight, q.scales = packed[0], packed[1]
        if mode == "affine":
            q.biases = packed[2]
        for name in ("low_rank", "out1", "out2"):
            if name in self:
                q[name] = self[name]
        return q


class QuantizedScaledEmbedding(_EmbeddingBase):
    """`ScaledEmbedding` whose table is quantized (`weight` packed uint32, `scales`, and
    `biases` in the affine mode; MLX's fp modes have uint8 scales and no biases)."""

    def __init__(self, num_embeddings: int, dim: int, *, group_size: int, bits: int, low_rank: int | None = None,
                 demux: bool = False, mode: str = "affine"):
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
            return mx.dequantize(self.weight[ids], self.scales[ids], self.biases[ids],
                                 group_size=self.group_size, bits=self.bits)
        return mx.dequantize(self.weight[ids], self.scales[ids], group_size=self.group_size, bits=self.bits,
                             mode=self.mode)
