"""Embeddings (zero token, low rank, demux, quantized twin) and the sampler."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.models.sampling import Sampler
from moshi_mlx.modules.embedding import ScaledEmbedding


def test_zero_token_embeds_to_zero_also_when_quantized():
    emb = ScaledEmbedding(100, 64)
    ids = mx.array([[3, -1, 99]])
    y = emb(ids)
    assert np.all(np.array(y[0, 1]) == 0) and np.any(np.array(y[0, 0]) != 0)
    q = emb.to_quantized(group_size=32, bits=8)
    yq = q(ids)
    assert np.all(np.array(yq[0, 1]) == 0)
    np.testing.assert_allclose(np.array(yq[0, 0]), np.array(y[0, 0]), atol=0.05)


@pytest.mark.parametrize("kind", ["plain", "low-rank+demux", "quantized"])
def test_sampled_tokens_skip_the_zero_token_test(kind):
    """zero_tokens=False (the depformer's sampled inputs): the same vectors, without the
    zero-token test's equality, clamp and select."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.graph_count import graph_counts

    emb = ScaledEmbedding(10, 32, low_rank=8, demux=True) if kind == "low-rank+demux" else ScaledEmbedding(10, 32)
    if kind == "quantized":
        emb = emb.to_quantized(group_size=32, bits=8)
    ids = mx.array([[4, 0, 9] if kind != "low-rank+demux" else [4 + 3 * 10, 0, 9]])
    mx.eval(emb.parameters())
    fast, full = emb(ids, zero_tokens=False), emb(ids)
    assert graph_counts(fast)["Equal"] < graph_counts(full)["Equal"]  # counted before they run
    assert mx.array_equal(fast, full).item()


def test_low_rank_and_demux():
    emb = ScaledEmbedding(10, 32, low_rank=8, demux=True)
    assert emb.weight.shape == (10, 8)
    first, second = 4, 2
    y = emb(mx.array([[first + (second + 1) * 10, first, -1]]))
    e = emb.weight
    # with demux, out1/out2 replace the low-rank projection (as in the reference)
    want = emb.out1(e[first]) + emb.out2(e[second])
    np.testing.assert_allclose(np.array(y[0, 0]), np.array(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(y[0, 1]), np.array(emb.out1(e[first])), rtol=1e-5, atol=1e-6)
    assert np.all(np.array(y[0, 2]) == 0)


def test_sampler():
    logits = mx.array([[0.0, 5.0, 1.0, 4.9], [3.0, 0.0, 0.0, 0.0]])
    assert Sampler(temp=0.0)(logits, None).tolist() == [1, 0]
    key = mx.random.key(0)
    draws = [Sampler(temp=1.0, top_k=2)(logits, k).tolist() for k in mx.random.split(key, 200)]
    assert {d[0] for d in draws} == {1, 3}
    draws = [Sampler(temp=1.0, top_p=0.5)(logits, k).tolist()[0] for k in mx.random.split(key, 100)]
    assert set(draws) == {1}
    a = Sampler(temp=1.0)(logits, mx.random.key(3)).tolist()
    assert a == Sampler(temp=1.0)(logits, mx.random.key(3)).tolist()
    with pytest.raises(ValueError):
        Sampler(temp=-1.0)


@pytest.mark.parametrize("top_k", [0, 3])
def test_sampler_draws_follow_the_tempered_softmax(top_k):
    """20000 draws (one row each): frequencies within 1.5 points of softmax(logits / temp),
    renormalised over the top k; tokens below the k-th logit never come."""
    base = np.array([2.0, 0.5, 1.5, -1.0, 1.0], dtype=np.float32)
    n, temp = 20000, 0.7
    got = np.array(Sampler(temp=temp, top_k=top_k)(mx.array(np.tile(base, (n, 1))), mx.random.key(11)))
    freq = np.bincount(got, minlength=base.size) / n
    p = np.exp(base / temp)
    if top_k:
        p[np.argsort(base)[: base.size - top_k]] = 0.0
    p /= p.sum()
    np.testing.assert_allclose(freq, p, atol=0.015)
    if top_k:
        assert set(got.tolist()) == set(np.flatnonzero(p).tolist())
