"""Residual vector quantization (inference only) on [B, T, C] arrays.

`EuclideanCodebook.embedding` holds the centroids (the loader computes them as PyTorch
does: `embedding_sum / max(cluster_usage, 1e-5)`). The nearest centroid is the argmin of
`|c|^2 / 2 - x.c`, the same order as the Euclidean distance, with one matmul.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class EuclideanCodebook(nn.Module):
    def __init__(self, dim: int, bins: int):
        super().__init__()
        self.dim = dim
        self.bins = bins
        self.embedding = mx.zeros((bins, dim))
        self._cache: tuple[mx.array, mx.array, mx.array] | None = None

    def _prepared(self) -> tuple[mx.array, mx.array]:
        """(embedding^T contiguous [dim, bins], |c|^2 / 2 [bins]), rebuilt if the weights change."""
        emb = self.embedding
        if self._cache is None or self._cache[0] is not emb:
            emb_t = mx.contiguous(emb.T)
            half_sq = 0.5 * mx.sum(emb * emb, axis=-1)
            mx.eval(emb_t, half_sq)
            self._cache = (emb, emb_t, half_sq)
        return self._cache[1], self._cache[2]

    def encode(self, x: mx.array) -> mx.array:
        """[..., dim] -> int32 codes [...]."""
        emb_t, half_sq = self._prepared()
        scores = half_sq - x @ emb_t
        return mx.argmin(scores, axis=-1).astype(mx.int32)

    def decode(self, codes: mx.array) -> mx.array:
        return mx.take(self.embedding, codes, axis=0)


class Projection(nn.Module):
    """Bias-free linear map with its weight stored [in, out], so `x @ weight` is the fast
    (non-transposed) BLAS orientation on CPU."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = mx.zeros((in_dim, out_dim))

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.weight


class ResidualVectorQuantizer(nn.Module):
    """Input projection, `n_q` codebooks in residual cascade, output projection.

    Projection weights are stored [in, out] (row-major matmul layout). `num_codebooks`
    (<= n_q) is how many levels `encode` produces; `decode` uses as many as it is given.
    """

    def __init__(self, dim: int, input_dim: int, output_dim: int, n_q: int, bins: int):
        super().__init__()
        self.n_q = n_q
        self.bins = bins
        self.input_proj = Projection(input_dim, dim)
        self.output_proj = Projection(dim, output_dim)
        self.layers = [EuclideanCodebook(dim, bins) for _ in range(n_q)]
        self.num_codebooks = n_q

    def encode(self, x: mx.array) -> mx.array:
        """[B, T, input_dim] -> codes [B, T, num_codebooks]."""
        residual = self.input_proj(x)
        codes = []
        for i, layer in enumerate(self.layers[: self.num_codebooks]):
            c = layer.encode(residual)
            codes.append(c)
            if i + 1 < self.num_codebooks:
                residual = residual - layer.decode(c)
        return mx.stack(codes, axis=-1)

    def decode(self, codes: mx.array) -> mx.array:
        """codes [B, T, K] (K <= n_q) -> [B, T, output_dim]."""
        q = None
        for k in range(codes.shape[-1]):
            v = self.layers[k].decode(codes[..., k])
            q = v if q is None else q + v
        return self.output_proj(q)


class SplitResidualVectorQuantizer(nn.Module):
    """Mimi's quantizer: `rvq_first` (the semantic codebook(s)) and `rvq_rest` (acoustic)
    both quantize the same latent with their own projections; codes are concatenated and
    the decoded latents summed."""

    def __init__(self, dim: int, input_dim: int, output_dim: int, n_q: int, n_q_semantic: int, bins: int):
        super().__init__()
        if not 0 < n_q_semantic < n_q:
            raise ValueError(f"need 0 < n_q_semantic ({n_q_semantic}) < n_q ({n_q})")
        self.n_q = n_q
        self.n_q_semantic = n_q_semantic
        self.bins = bins
        self.rvq_first = ResidualVectorQuantizer(dim, input_dim, output_dim, n_q_semantic, bins)
        self.rvq_rest = ResidualVectorQuantizer(dim, input_dim, output_dim, n_q - n_q_semantic, bins)

    @property
    def num_codebooks(self) -> int:
        return self.rvq_first.num_codebooks + self.rvq_rest.num_codebooks

    def set_num_codebooks(self, n: int) -> None:
        if not self.n_q_semantic <= n <= self.n_q:
            raise ValueError(f"num_codebooks must be between {self.n_q_semantic} and {self.n_q}, got {n}")
        self.rvq_rest.num_codebooks = n - self.n_q_semantic

    def encode(self, x: mx.array) -> mx.array:
        """[B, T, input_dim] -> codes [B, T, num_codebooks]."""
        codes = self.rvq_first.encode(x)
        if self.rvq_rest.num_codebooks:
            codes = mx.concatenate([codes, self.rvq_rest.encode(x)], axis=-1)
        return codes

    def decode(self, codes: mx.array) -> mx.array:
        """codes [B, T, K] -> [B, T, output_dim]."""
        k = codes.shape[-1]
        if not self.n_q_semantic <= k <= self.n_q:
            raise ValueError(f"expected between {self.n_q_semantic} and {self.n_q} codebooks, got {k}")
        q = self.rvq_first.decode(codes[..., : self.n_q_semantic])
        if k > self.n_q_semantic:
            q = q + self.rvq_rest.decode(codes[..., self.n_q_semantic :])
        return q
