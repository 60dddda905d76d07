"""Bytes of matmul weights one frame step reads, by part and storage kind.

Standalone (imports only mlx), so that the script run in upstream's virtual environment
uses the very same accounting on upstream's model: both models use the published MLX
parameter names (`transformer.layers.N`, `text_linear`, `depformer.slices.K`, ...).

Counted: every Linear / QuantizedLinear a step runs (weight, scales, biases, bias).
Not counted: embedding tables (a step reads one row per stream: kilobytes), norms,
the KV cache (small at the positions benchmarked), conditioners and extra heads (not run
per step).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

_DTYPES = {mx.float32: "fp32", mx.bfloat16: "bf16", mx.float16: "fp16"}
_SKIP = ("condition_provider", "extra_heads")


def kind_of(m: nn.Module) -> str:
    """'fp32' / 'bf16' / 'fp16' for float Linears, 'q8g64-bf16' (bits, group, scales dtype)
    for affine quantized ones, '<mode>g<group>' for the fp quantization modes."""
    if isinstance(m, nn.QuantizedLinear):
        mode = getattr(m, "mode", "affine")
        if mode != "affine":
            return f"{mode}g{m.group_size}"
        return f"q{m.bits}g{m.group_size}-{_DTYPES.get(m.scales.dtype, str(m.scales.dtype))}"
    return _DTYPES.get(m.weight.dtype, str(m.weight.dtype))


def _nbytes(m: nn.Module) -> int:
    return sum(getattr(m, k).nbytes for k in ("weight", "scales", "biases", "bias") if k in m)


def step_bytes(model: nn.Module) -> dict[str, dict[str, int]]:
    """{'temporal': {kind: bytes}, 'depformer': {...}, 'layer': {...}} where 'layer' is
    temporal layer 0 alone (the unit of the per-layer extrapolation)."""
    out: dict[str, dict[str, int]] = {"temporal": {}, "depformer": {}, "layer": {}}
    for path, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.QuantizedLinear)) or path.startswith(_SKIP):
            continue
        part = "depformer" if path.startswith("depformer.") else "temporal"
        k = kind_of(m)
        n = _nbytes(m)
        out[part][k] = out[part].get(k, 0) + n
        if path == "transformer.layers.0" or path.startswith("transformer.layers.0."):
            out["layer"][k] = out["layer"].get(k, 0) + n
    return out


def total(by_kind: dict[str, int]) -> int:
    return int(sum(by_kind.values()))
