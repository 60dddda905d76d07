"""The compute format of a loaded LM, chosen per backend (the weights file stays as it is).

What is fast differs by backend. Measured on MLX 0.32's Linux CPU backend (this machine,
2 cores, an 8192 x 4096 mat-vec, one stream; bench/floor.py):

| weights | activations | GB/s | Gweights/s |
|---|---|---|---|
| q8 / q4 (affine, bf16 scales) | bf16 | 0.16 / 0.10 | 0.15 / 0.16 |
| q8 / q4 (affine, bf16 scales) | fp32 | 1.48 / 0.86 | 1.39 / 1.38 |
| bf16 | bf16 | 3.0 | 1.5 |
| bf16 | fp32 | 0.89 | 0.45 |
| fp32 | fp32 | 7.5 | 1.9 |

So on a CPU, quantized models run with float32 activations (upstream's bf16 recipe takes
MLX's scalar path, ~9x slower); float layers compute in their own dtype (a cast of the
activation vector around a bf16 layer costs nothing; bf16 x fp32 takes the slow mixed
path); and the mat-vecs are split over two cores (`modules/parallel.py`). On Metal (and
CUDA) bf16 activations are the fast path and nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ..modules.parallel import (CastLinear, ParallelLinear, ParallelQuantizedLinear, cpu_count, set_linear_class,
                                worth_splitting)

ACTIVATIONS = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


@dataclass
class ComputeFormat:
    """What `prepare_lm` did, for logs and benchmark reports."""

    device: str
    activation_dtype: str
    parallel_linears: int
    cast_linears: int

    def describe(self) -> str:
        s = f"{self.activation_dtype} activations on {self.device}"
        if self.parallel_linears:
            s += f", {self.parallel_linears} mat-vecs split over 2 cores"
        return s


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())


def float_weight_dtype(model: nn.Module) -> mx.Dtype | None:
    """dtype of the float Linear weights (the first one found), None if there are none."""
    for _, m in model.named_modules():
        if isinstance(m, nn.Linear) and mx.issubdtype(m.weight.dtype, mx.floating):
            return m.weight.dtype
    return None


def default_activation_dtype(model: nn.Module, device: mx.Device | None = None) -> mx.Dtype | None:
    """float32 for a quantized model on a CPU; otherwise None (the weights' own dtype)."""
    device = device or mx.default_device()
    if device.type == mx.DeviceType.cpu and is_quantized(model):
        return mx.float32
    return None


def prepare_lm(lm, activation: str | mx.Dtype | None = "auto", parallel: bool | str = "auto") -> ComputeFormat:
    """Set `lm`'s compute format for the default device, in place (weights untouched).

    activation: "auto" (float32 for quantized models on a CPU, else the weights' dtype),
      "stored" / None (the weights' dtype), or a dtype / its name.
    parallel: "auto" (on a CPU with >= 2 cores), True or False: split float mat-vecs of
      at least ~1M weights (float and quantized) over two CPU streams."""
    device = mx.default_device()
    cpu = device.type == mx.DeviceType.cpu
    if activation == "auto":
        act = default_activation_dtype(lm, device)
    elif activation in (None, "stored"):
        act = None
    elif isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation dtype {activation!r}; expected auto, stored or one of "
                             f"{', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
    else:
        act = activation
    lm.activation_dtype = act
    if parallel == "auto":
        parallel = cpu and cpu_count() >= 2
    n_par = n_cast = 0
    if parallel and cpu:
        n_par = set_linear_class(lm, ParallelLinear, _parallel_ok)
        n_par += set_linear_class(lm, ParallelQuantizedLinear, lambda _, m: worth_splitting(m))
        mx.eval(lm.parameters())
    # float layers whose weights differ from the activations compute in their own dtype
    if act is not None:
        n_cast = set_linear_class(lm, CastLinear, lambda _, m: type(m) is nn.Linear and m.weight.dtype != act)
    return ComputeFormat(str(device), str(lm.dtype).replace("mlx.core.", ""), n_par, n_cast)


def _parallel_ok(path: str, m: nn.Linear) -> bool:
    if not worth_splitting(m):
        return False
    # the halves must be row-contiguous views (a column-major weight is re-laid out once)
    m.weight = mx.contiguous(m.weight)
    return True
