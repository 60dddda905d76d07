"""Residual VQ: nearest centroids equal a brute-force numpy search, the cascade quantizes
residuals, the split quantizer concatenates/sums its two halves, and `num_codebooks`
truncates only the acoustic part."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.modules.quantization import EuclideanCodebook, SplitResidualVectorQuantizer

RNG = np.random.default_rng(0)


def test_codebook_nearest_centroid_matches_numpy():
    cb = EuclideanCodebook(8, 50)
    emb = RNG.standard_normal((50, 8)).astype(np.float32)
    cb.embedding = mx.array(emb)
    x = RNG.standard_normal((3, 7, 8)).astype(np.float32)
    codes = np.array(cb.encode(mx.array(x)))
    d = ((x[..., None, :] - emb) ** 2).sum(-1)
    np.testing.assert_array_equal(codes, d.argmin(-1))
    np.testing.assert_array_equal(np.array(cb.decode(mx.array(codes))), emb[codes])
    # replacing the weights invalidates the cached transposed table and norms
    cb.embedding = mx.array(-emb)
    np.testing.assert_array_equal(np.array(cb.encode(mx.array(x))), ((x[..., None, :] + emb) ** 2).sum(-1).argmin(-1))


def _split(n_q=5, n_sem=1, dim=6, d_in=10, bins=32):
    q = SplitResidualVectorQuantizer(dim, d_in, d_in, n_q, n_sem, bins)
    for rvq in (q.rvq_first, q.rvq_rest):
        rvq.input_proj.weight = mx.array(RNG.standard_normal((d_in, dim)).astype(np.float32) / np.sqrt(d_in))
        rvq.output_proj.weight = mx.array(RNG.standard_normal((dim, d_in)).astype(np.float32))
        for layer in rvq.layers:
            layer.embedding = mx.array(RNG.standard_normal((bins, dim)).astype(np.float32) * 0.7)
    return q


def _np_rvq(x, rvq, n):
    r = x @ np.array(rvq.input_proj.weight)
    codes = []
    for layer in rvq.layers[:n]:
        emb = np.array(layer.embedding)
        c = ((r[..., None, :] - emb) ** 2).sum(-1).argmin(-1)
        codes.append(c)
        r = r - emb[c]
    return np.stack(codes, -1)


def test_split_rvq_matches_numpy_cascade_and_decodes():
    q = _split()
    x = RNG.standard_normal((2, 9, 10)).astype(np.float32)
    codes = np.array(q.encode(mx.array(x)))
    assert codes.shape == (2, 9, 5)
    np.testing.assert_array_equal(codes[..., :1], _np_rvq(x, q.rvq_first, 1))
    np.testing.assert_array_equal(codes[..., 1:], _np_rvq(x, q.rvq_rest, 4))
    ref = sum(np.array(q.rvq_first.layers[0].embedding)[codes[..., 0]] for _ in [0]) @ np.array(
        q.rvq_first.output_proj.weight
    )
    rest = sum(np.array(q.rvq_rest.layers[k].embedding)[codes[..., 1 + k]] for k in range(4))
    ref = ref + rest @ np.array(q.rvq_rest.output_proj.weight)
    np.testing.assert_allclose(np.array(q.decode(mx.array(codes))), ref, rtol=1e-5, atol=1e-5)


def test_num_codebooks_truncates_the_acoustic_levels():
    q = _split(n_q=6, n_sem=2)
    x = mx.array(RNG.standard_normal((1, 4, 10)).astype(np.float32))
    full = np.array(q.encode(x))
    q.set_num_codebooks(3)
    assert q.num_codebooks == 3
    np.testing.assert_array_equal(np.array(q.encode(x)), full[..., :3])
    with pytest.raises(ValueError, match="between 2 and 6"):
        q.set_num_codebooks(1)
    with pytest.raises(ValueError, match="between 2 and 6"):
        q.decode(mx.zeros((1, 4, 7), dtype=mx.int32))
