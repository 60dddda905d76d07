"""Column-major Linear weights: same names and shapes, same results (bit-identical for the
bias-free layers Mimi and the LM use, up to float rounding with a bias)."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from moshi_mlx.modules.blas_layout import column_major_linears


def test_relayout_keeps_results_and_names():
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(16, 32, bias=False), nn.Linear(32, 8))
    x = mx.random.normal((3, 5, 16))
    hidden, ref = np.array(model.layers[0](x)), np.array(model(x))
    shapes = {k: v.shape for k, v in tree_flatten(model.parameters())}
    assert column_major_linears(model, force=True) == 2
    w = model.layers[0].weight
    assert w.shape == (32, 16) and memoryview(w).strides == (4, 32 * 4)  # column-major
    np.testing.assert_array_equal(np.array(model.layers[0](x)), hidden)
    np.testing.assert_allclose(np.array(model(x)), ref, rtol=1e-5, atol=1e-6)
    assert {k: v.shape for k, v in tree_flatten(model.parameters())} == shapes
