"""The shared transformer: streaming equals batch for any chunking, and the context window
follows Kyutai's rule (key visible iff 0 <= q - k < context), checked against numpy."""

import mlx.core as mx
import mlx.utils
import numpy as np
import pytest

from moshi_mlx.modules.kv_cache import KVCache
from moshi_mlx.modules.transformer import Transformer, TransformerConfig


def _model(**kw):
    cfg = dict(d_model=32, num_heads=4, num_layers=2, dim_feedforward=96, context=5)
    cfg.update(kw)
    mx.random.seed(1)
    m = Transformer(TransformerConfig(**cfg))
    # random (not default) norm/scale weights so every parameter matters
    m.update(mlx.utils.tree_map(lambda p: mx.random.normal(p.shape) * 0.3, m.parameters()))
    return m


def _stream(m, x, chunk):
    cache = m.make_cache()
    outs = [m(x[:, i : i + chunk], cache) for i in range(0, x.shape[1], chunk)]
    return mx.concatenate(outs, axis=1)


@pytest.mark.parametrize(
    "kw",
    [
        dict(norm="rms_norm_f32", gating="silu"),
        dict(norm="layer_norm", gating="none", layer_scale=0.01),
        dict(norm="rms_norm", gating="silu", positional_embedding="sin"),
        dict(norm="rms_norm_f32", gating="silu", kv_repeat=2),
        dict(norm="layer_norm", gating="none", positional_embedding="rope_concat", context=None),
    ],
)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_streaming_equals_batch(kw, chunk):
    m = _model(**kw)
    x = mx.random.normal((2, 23, 32))
    ref = m(x)
    out = _stream(m, x, chunk)
    np.testing.assert_allclose(np.array(out), np.array(ref), atol=2e-5, rtol=1e-4)


def test_context_changes_the_output():
    """A model with a tiny context must differ from the unbounded one after `context` steps
    and equal it before (guards against a mask that is silently ignored)."""
    x = mx.random.normal((1, 12, 32))
    a = np.array(_model(context=4)(x))
    b = np.array(_model(context=None)(x))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-3


def _numpy_attention(q, k, v, context):
    T = q.shape[2]
    out = np.zeros_like(q)
    for t in range(T):
        lo = max(0, t - context + 1)
        s = np.einsum("bhd,bhkd->bhk", q[:, :, t], k[:, :, lo : t + 1]) / np.sqrt(q.shape[-1])
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out[:, :, t] = np.einsum("bhk,bhkd->bhd", w, v[:, :, lo : t + 1])
    return out


@pytest.mark.parametrize("chunk", [1, 3])
def test_ring_cache_against_numpy_over_many_wraps(chunk):
    context, T = 4, 41
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, T, 8)).astype(np.float32) for _ in range(3))
    ref = _numpy_attention(q, k, v, context)
    cache = KVCache(context)
    outs = []
    for i in range(0, T, chunk):
        sl = slice(i, i + chunk)
        kk, vv, mask = cache.update_and_fetch(mx.array(k[:, :, sl]), mx.array(v[:, :, sl]))
        o = mx.fast.scaled_dot_product_attention(mx.array(q[:, :, sl]), kk, vv, scale=8**-0.5, mask=mask)
        outs.append(np.array(o))
    np.testing.assert_allclose(np.concatenate(outs, axis=2), ref, atol=1e-5)
    assert cache.offset == T


def test_reset_restarts_positions():
    m = _model()
    x = mx.random.normal((1, 9, 32))
    cache = m.make_cache()
    first = np.array(_stream_with(m, x, cache))
    for c in cache:
        c.reset()
    again = np.array(_stream_with(m, x, cache))
    np.testing.assert_array_equal(first, again)


def _stream_with(m, x, cache):
    return mx.concatenate([m(x[:, i : i + 1], cache) for i in range(x.shape[1])], axis=1)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="positional_embedding"):
        TransformerConfig(d_model=8, num_heads=2, num_layers=1, dim_feedforward=8, positional_embedding="alibi")
    with pytest.raises(ValueError, match="norm"):
        Transformer(TransformerConfig(d_model=8, num_heads=2, num_layers=1, dim_feedforward=8, norm="batch_norm"))
