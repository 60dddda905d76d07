"""Two-stream Linear and dtype-casting Linear: same names, shapes and results as nn.Linear."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from moshi_mlx.modules.parallel import (
    CastLinear,
    ParallelLinear,
    ParallelQuantizedLinear,
    parallelize_linears,
    set_linear_class,
)
from moshi_mlx.runtime.workers import run_in_worker


def _model():
    mx.random.seed(3)
    return nn.Sequential(nn.Linear(48, 1030, bias=False), nn.Linear(1030, 600), nn.Linear(600, 16))


def test_parallel_linear_is_exact_and_keeps_names():
    model = _model()
    x = mx.random.normal((2, 3, 48))
    ref_hidden, ref = np.array(model.layers[0](x)), np.array(model(x))
    shapes = {k: v.shape for k, v in tree_flatten(model.parameters())}
    assert parallelize_linears(model, min_weights=20_000) == 2  # the 16-row head stays plain
    assert [type(m) for m in model.layers] == [ParallelLinear, ParallelLinear, nn.Linear]
    # each output is the same dot product, computed on another stream: bit-identical
    np.testing.assert_array_equal(np.array(model.layers[0](x)), ref_hidden)
    np.testing.assert_allclose(np.array(model(x)), ref, rtol=1e-6, atol=1e-6)
    assert {k: v.shape for k, v in tree_flatten(model.parameters())} == shapes
    assert parallelize_linears(model) == 0  # idempotent


def test_parallel_linear_from_another_thread():
    """Each thread gets its own helper stream (MLX streams belong to their thread)."""
    model = _model()
    x = mx.random.normal((1, 1, 48))
    ref = np.array(model(x))
    parallelize_linears(model, min_weights=20_000)
    out = {}

    def run():
        out["y"] = np.array(model(x))

    # a pooled worker (with its own stream, as the pipeline's LM worker): its helper stream
    # is made in that thread, which never exits (see runtime/workers.py)
    assert run_in_worker(run).wait(60)
    np.testing.assert_allclose(out["y"], ref, rtol=1e-6, atol=1e-6)


def test_bf16_layers_compute_in_their_dtype_under_fp32_activations():
    model = _model()
    model.set_dtype(mx.bfloat16)
    x = mx.random.normal((1, 1, 48))
    ref = np.array(model(x.astype(mx.bfloat16)).astype(mx.float32))
    assert set_linear_class(model, CastLinear, lambda p, m: True) == 3
    y = model(x)  # fp32 in: each layer casts to bf16, computes, casts back
    assert y.dtype == mx.float32
    np.testing.assert_array_equal(np.array(y), ref)
    parallelize_linears(model, min_weights=20_000)  # a ParallelLinear casts the same way
    np.testing.assert_array_equal(np.array(model(x)), ref)


def test_parallel_quantized_linear_is_exact():
    mx.random.seed(4)
    q8 = nn.Linear(256, 1030, bias=False).to_quantized(group_size=64, bits=8)  # odd half: 515 rows
    q4 = nn.Linear(128, 700).to_quantized(group_size=32, bits=4)  # with a bias
    q8.set_dtype(mx.bfloat16)  # bf16 scales, fp32 activations: as prepare_lm runs them
    model = nn.Sequential(q8, q4)
    xs = [mx.random.normal((1, 1, 256)), mx.random.normal((2, 3, 128))]
    refs = [np.array(q8(xs[0])), np.array(q4(xs[1]))]
    assert parallelize_linears(model, min_weights=20_000) == 2
    assert all(isinstance(m, ParallelQuantizedLinear) for m in model.layers)
    assert (model.layers[0].bits, model.layers[0].group_size, model.layers[1].bits) == (8, 64, 4)
    for m, x, ref in zip(model.layers, xs, refs):
        np.testing.assert_array_equal(np.array(m(x)), ref)
