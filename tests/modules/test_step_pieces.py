"""The pieces of the compiled accelerator step (models/frame_step.py): each gives what the
plain module gives, with fewer graph nodes."""

import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from moshi_mlx.modules.attention import MultiheadAttention
from moshi_mlx.modules.embedding import ScaledEmbedding, StackedEmbeddings
from moshi_mlx.modules.kv_cache import KVCache
from moshi_mlx.modules.norm import RMSNorm, set_fused_norms
from moshi_mlx.modules.rope import _sin_embedding, sin_embedding
from moshi_mlx.modules.step_linear import StepLinear, add_linear, prime_step_linears

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.graph_count import graph_counts  # noqa: E402


def _step_linear(lin: nn.Linear) -> StepLinear:
    s = StepLinear.__new__(StepLinear)
    s.__dict__.update(lin.__dict__)
    for k, v in lin.items():
        s[k] = v
    return s


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_step_linear_is_linear_without_a_transpose_node(bias, dtype):
    lin = nn.Linear(48, 80, bias=bias)
    lin.set_dtype(dtype)
    step = _step_linear(lin)
    assert prime_step_linears(step) == 1
    for shape in [(2, 48), (2, 3, 48)]:
        x = mx.random.normal(shape).astype(dtype)
        mx.eval(x)
        assert mx.array_equal(step(x), lin(x)).item()
    x = mx.random.normal((1, 48)).astype(dtype)
    mx.eval(x)
    counts = graph_counts(step(x))
    assert "Transpose" not in counts and "Transpose" in graph_counts(lin(x))


def test_step_linear_follows_a_replaced_weight_and_casts_other_activations():
    step = _step_linear(nn.Linear(16, 8, bias=False))
    x = mx.random.normal((1, 16))
    step(x)
    step.weight = mx.ones((8, 16))
    assert np.allclose(np.array(step(x)), np.array(x @ mx.ones((16, 8))))
    step.set_dtype(mx.bfloat16)
    y = step(x)  # float32 activations, bf16 weights: computed in bf16, returned in float32
    assert y.dtype == mx.float32
    assert np.allclose(np.array(y), np.array((x.astype(mx.bfloat16) @ step.weight.T).astype(mx.float32)))


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_add_to_folds_the_residual_into_the_matmul(dtype):
    mx.random.seed(4)
    lin = nn.Linear(64, 48, bias=False)
    lin.set_dtype(dtype)
    step = _step_linear(lin)
    x, res = mx.random.normal((2, 64)).astype(dtype), mx.random.normal((2, 48)).astype(dtype)
    mx.eval(x, res)
    got, ref = step.add_to(res, x), res + lin(x)
    counts = graph_counts(got)
    assert counts["AddMM"] == 1 and "Add" not in counts and "Matmul" not in counts
    # one rounding instead of two: within an ulp of the activation dtype
    tol = 1e-5 if dtype == mx.float32 else 2**-7
    np.testing.assert_allclose(np.array(got.astype(mx.float32)), np.array(ref.astype(mx.float32)), rtol=tol, atol=tol)
    assert mx.array_equal(add_linear(lin, res, x), ref).item()  # any other layer: the plain sum
    # a bias or a cast between them: the plain sum, same result as before
    biased = _step_linear(nn.Linear(64, 48))
    biased.set_dtype(dtype)
    assert mx.array_equal(biased.add_to(res, x), res + biased(x)).item()
    x32 = x.astype(mx.float32)
    if dtype != mx.float32:
        assert mx.array_equal(step.add_to(res, x32), res + step(x32)).item()


def test_one_token_rows_attend_like_the_three_d_path():
    mx.random.seed(0)
    attn = MultiheadAttention(64, 4, context=16, rope="rope")
    c3, c2 = KVCache(16), KVCache(16)
    for _ in range(20):  # past the context: the ring wraps
        x = mx.random.normal((2, 64))
        np.testing.assert_allclose(np.array(attn(x, c2)), np.array(attn(x[:, None], c3)[:, 0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cache"):
        attn(mx.zeros((1, 64)))


@pytest.mark.parametrize("quantized", [False, True])
def test_stacked_embeddings_look_up_what_each_table_does(quantized):
    mx.random.seed(1)
    tables = [ScaledEmbedding(33, 64) for _ in range(4)]
    if quantized:
        tables = [t.to_quantized(group_size=32, bits=4) for t in tables]
    ids = mx.array([[3, -1, 32, 0], [7, 8, -1, 31]], dtype=mx.int32)
    expected = [np.array(t(ids[:, i])) for i, t in enumerate(tables)]
    before = [t["weight"] for t in tables]
    assert StackedEmbeddings.stackable(tables)
    stack = StackedEmbeddings(tables)
    assert stack.current(tables)
    got = np.array(stack(ids))
    for i in range(4):
        assert np.array_equal(got[:, i], expected[i])  # zero tokens embed to exact zeros
        assert np.array_equal(np.array(tables[i](ids[:, i])), expected[i])  # the tables still work alone
        assert np.array_equal(np.array(tables[i]["weight"]), np.array(before[i]))
    assert np.array_equal(np.array(stack(ids[:, :, None]))[:, :, 0], got)  # [B, n, T] ids
    tables[2]["weight"] = mx.array(np.array(tables[2]["weight"]))  # a reload: the stack is stale
    assert not stack.current(tables)


def test_stacking_refuses_tables_that_differ():
    assert not StackedEmbeddings.stackable([ScaledEmbedding(10, 8), ScaledEmbedding(11, 8)])
    assert not StackedEmbeddings.stackable([ScaledEmbedding(10, 8, low_rank=4)] * 2)
    assert not StackedEmbeddings.stackable([ScaledEmbedding(10, 8)])


def test_fused_norm_matches_the_float32_norm_within_bf16_rounding():
    mx.random.seed(2)
    norm = RMSNorm(256)
    norm.weight = mx.random.uniform(0.5, 1.5, (256,))
    x = (mx.random.normal((3, 256)) * 4).astype(mx.bfloat16)
    ref = np.array(norm(x).astype(mx.float32))
    assert set_fused_norms(norm) == 1
    fused = norm(x)
    assert fused.dtype == mx.bfloat16
    # two roundings instead of one: at most 2 bf16 ulps apart
    np.testing.assert_allclose(np.array(fused.astype(mx.float32)), ref, rtol=2**-6, atol=1e-6)
    assert not np.array_equal(np.array(fused.astype(mx.float32)), ref)  # it is the other path
    x32 = x.astype(mx.float32)  # float32 inputs take the float32 path either way
    set_fused_norms(norm, False)
    a = norm(x32)
    set_fused_norms(norm, True)
    assert mx.array_equal(a, norm(x32)).item()


def test_sin_rows_at_int_offsets_match_the_graph_version():
    for off in (0, 1, 5, 31):
        row = np.array(sin_embedding(off, 1, 96, 10_000.0))
        graph = np.array(_sin_embedding(mx.array(off), 1, 96, 10_000.0, mx.float32))
        np.testing.assert_allclose(row, graph, atol=1e-6)
    assert graph_counts(sin_embedding(3, 1, 96, 10_000.0)) == {}  # a constant


def test_frame_cache_keeps_keys_and_values_side_by_side():
    from moshi_mlx.modules.kv_cache import FrameCache

    a, b = FrameCache(3), FrameCache(3)
    for _ in range(5):  # past the context: the oldest drop out of both
        k, v = mx.random.normal((2, 4, 1, 8)), mx.random.normal((2, 4, 1, 8))
        k1, v1, m1 = a.update_and_fetch(k, v)
        k2, v2, m2 = b.update_and_fetch_kv(mx.concatenate([k, v], axis=1), 4)
        assert mx.array_equal(k1, k2).item() and mx.array_equal(v1, v2).item() and m1 is None and m2 is None
    assert a.offset == b.offset == 5 and k2.shape[2] == 3
    with pytest.raises(ValueError, match="one token"):
        b.update_and_fetch_kv(mx.zeros((1, 8, 2, 8)), 4)
    b.reset()
    assert b.kv is None and b.offset == 0
