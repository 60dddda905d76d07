"""A Linear for the compiled accelerator step: no transpose node per call, and the
residual add folded into the matmul.

`nn.Linear` computes `x @ weight.T`, so every call adds a Transpose node to the graph
before the matmul. It launches no kernel, but a frame step has hundreds of them and each
node costs host time to build and to run. Here the transposed view is made once (it
shares the weight's memory, with swapped strides: the matmul kernel sees exactly what
`weight.T` gives it) and reused while the parameter stays the same array. A transformer
layer adds each block's output to its input: `add_to` makes that the matmul's own
accumulation (`addmm`), a kernel fewer per block.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class StepLinear(nn.Linear):
    """`nn.Linear` with a kept transposed view of its weight; computes in the weight's
    dtype (activations of another dtype are cast around it, as `CastLinear`)."""

    # False: `add_to` is a matmul then an add (on CUDA, MLX sends addmm of one row to
    # cuBLASLt rather than its gemv kernel: the GPU suite measures both)
    fuse_residual = True

    def _weight_t(self) -> mx.array:
        w = self.weight
        kept = self.__dict__.get("_wt")
        if kept is None or kept[0] is not w:
            wt = w.T
            mx.eval(wt)  # an evaluated view: a constant for traces, not a node
            kept = self.__dict__["_wt"] = (w, wt)
        return kept[1]

    def __call__(self, x: mx.array) -> mx.array:
        wt = self._weight_t()
        cast = x.dtype != wt.dtype
        y = x.astype(wt.dtype) if cast else x
        y = mx.addmm(self.bias, y, wt) if "bias" in self else y @ wt
        return y.astype(x.dtype) if cast else y

    def add_to(self, residual: mx.array, x: mx.array) -> mx.array:
        """`residual + self(x)` as one matmul that accumulates onto the residual (`addmm`):
        one kernel instead of two, where nothing stands between them (no bias, no cast)."""
        wt = self._weight_t()
        if not self.fuse_residual or "bias" in self or x.dtype != wt.dtype or residual.dtype != wt.dtype:
            return residual + self(x)
        return mx.addmm(residual, x, wt)


def add_linear(linear: nn.Module, residual: mx.array | None, x: mx.array) -> mx.array:
    """`residual + linear(x)`: fused into the matmul for a `StepLinear` (the compiled
    accelerator step), the plain sum for any other layer; `linear(x)` without a residual."""
    if residual is None:
        return linear(x)
    if isinstance(linear, StepLinear):
        return linear.add_to(residual, x)
    return residual + linear(x)


def prime_step_linears(model: nn.Module) -> int:
    """Make every `StepLinear`'s view now, outside any trace (a view first made inside a
    trace would be a node of it)."""
    n = 0
    for _, m in model.named_modules():
        if isinstance(m, StepLinear):
            m._weight_t()
            n += 1
    return n
