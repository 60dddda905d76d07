"""Mat-vecs split over two CPU streams, so a frame step uses two cores.

MLX's CPU backend runs each stream on its own thread, and one matrix-vector product runs
on one core, so during a decoding step (a chain of such products) the other cores idle.
`ParallelLinear` / `ParallelQuantizedLinear` compute the first half of their output rows
on the caller's stream and the second half on a helper stream, then join them: same
parameters (names, shapes, arrays: the halves are views), same results (each output is
the same dot product). Measured on this 2-core machine, idle: an 8192 x 4096 q8 mat-vec
47 -> 24 ms, fp32 35 -> 18 ms. With the other core busy (another process) the split
gains nothing and costs about nothing.

Nothing changes on a GPU (one queue does all the work there).
"""

from __future__ import annotations

import os
import threading

import mlx.core as mx
import mlx.nn as nn

from .step_linear import StepLinear, prime_step_linears

_local = threading.local()

# below ~1M weights a mat-vec takes well under a millisecond and the hand-off to the
# helper thread is no longer negligible
MIN_PARALLEL_WEIGHTS = 1 << 20


def helper_stream() -> mx.Stream:
    """This thread's helper CPU stream (MLX streams belong to the thread that made them)."""
    s = getattr(_local, "stream", None)
    if s is None:
        s = _local.stream = mx.new_stream(mx.cpu)
    return s


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ParallelLinear(nn.Linear):
    """`nn.Linear` whose output rows are computed in two halves on two CPU streams
    (in the weight's dtype: activations of another dtype are cast around it)."""

    def __call__(self, x: mx.array) -> mx.array:
        w = self.weight
        b = self.bias if "bias" in self else None
        if x.dtype != w.dtype:  # a float layer in a model run with other activations
            return self._halves(x.astype(w.dtype), w, b).astype(x.dtype)
        return self._halves(x, w, b)

    @staticmethod
    def _halves(x: mx.array, w: mx.array, b: mx.array | None) -> mx.array:
        half = w.shape[0] // 2
        s = helper_stream()
        if b is None:
            lo = mx.matmul(x, w[:half].T)
            hi = mx.matmul(x, w[half:].T, stream=s)
        else:  # addmm, as nn.Linear does, so results stay bit-identical
            lo = mx.addmm(b[:half], x, w[:half].T)
            hi = mx.addmm(b[half:], x, w[half:].T, stream=s)
        return mx.concatenate([lo, hi], axis=-1)


class ParallelQuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` whose output rows are computed in two halves on two CPU streams."""

    def __call__(self, x: mx.array) -> mx.array:
        half = self["weight"].shape[0] // 2
        biases = self.get("biases")

        def part(rows: slice, stream=None) -> mx.array:
            return mx.quantized_matmul(
                x,
                self["weight"][rows],
                scales=self["scales"][rows],
                biases=None if biases is None else biases[rows],
                transpose=True,
                group_size=self.group_size,
                bits=self.bits,
                mode=self.mode,
                stream=stream,
            )

        y = mx.concatenate([part(slice(0, half)), part(slice(half, None), helper_stream())], axis=-1)
        if "bias" in self:
            y = y + self["bias"]
        return y


class CastLinear(nn.Linear):
    """`nn.Linear` that computes in its weight's dtype whatever the activation dtype
    (bf16 weights times fp32 activations take MLX's slow mixed-dtype path on a CPU)."""

    def __call__(self, x: mx.array) -> mx.array:
        w = self.weight
        if x.dtype == w.dtype:
            return super().__call__(x)
        return super().__call__(x.astype(w.dtype)).astype(x.dtype)


_FLOAT = (nn.Linear, ParallelLinear, CastLinear, StepLinear)
_QUANT = (nn.QuantizedLinear, ParallelQuantizedLinear)


def _swap(module: nn.Module, cls) -> nn.Module:
    """An instance of `cls` with `module`'s arrays (no copy) and attributes."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)  # bits, group_size, mode, training flags...
    for k, v in module.items():  # same arrays, same names
        new[k] = v
    return new


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent: object = model
    parts = path.split(".")
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        parent[int(parts[-1])] = new
    else:
        parent[parts[-1]] = new


def set_linear_class(model: nn.Module, cls, predicate) -> int:
    """Replace every Linear of `cls`'s family (float: nn.Linear and its twins here;
    quantized: nn.QuantizedLinear and its twin) under `model` for which `predicate(path, m)`
    holds by an instance of `cls` sharing its arrays; returns how many were replaced."""
    family = _QUANT if issubclass(cls, nn.QuantizedLinear) else _FLOAT
    count = 0
    for path, m in list(model.named_modules()):
        if type(m) not in family or type(m) is cls:
            continue
        if family is _FLOAT and not mx.issubdtype(m.weight.dtype, mx.floating):
            continue
        if not predicate(path, m):
            continue
        _replace(model, path, _swap(m, cls))
        count += 1
    return count


def weight_count(m: nn.Module) -> int:
    rows = m.weight.shape[0]
    cols = m.weight.shape[1] * (32 // m.bits if isinstance(m, nn.QuantizedLinear) else 1)
    return rows * cols


def worth_splitting(m: nn.Module, min_weights: int = MIN_PARALLEL_WEIGHTS) -> bool:
    return m.weight.shape[0] >= 2 and weight_count(m) >= min_weights


def parallelize_linears(model: nn.Module, min_weights: int = MIN_PARALLEL_WEIGHTS) -> int:
    """Make float and quantized Linears of at least `min_weights` weights split their
    rows over two CPU streams; returns how many."""
    ok = lambda _, m: worth_splitting(m, min_weights)  # noqa: E731
    return set_linear_class(model, ParallelLinear, ok) + set_linear_class(model, ParallelQuantizedLinear, ok)


def use_step_linears(model: nn.Module) -> int:
    """The plain float Linears under `model` as `StepLinear`s (same arrays, same results),
    their views made now: what a compiled accelerator step runs. Two-stream
    `ParallelLinear`s are left alone."""
    n = set_linear_class(model, StepLinear, lambda _, m: type(m) in (nn.Linear, CastLinear))
    prime_step_linears(model)
    return n
