"""Affine quantization of the LM: which modules can be quantized, reading bits and group size
back from a file's tensor shapes, and swapping modules for their quantized twins.

Bits and group size are never guessed from file names: a quantized `path` stores
`path.weight` uint32 [out, in * bits / 32] and `path.scales` [out, in / group], so with the
input width `in` known from the config both follow exactly. Embeddings become
`QuantizedScaledEmbedding`, which keeps the token -1 -> zero vector rule.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from ..modules.embedding import QuantizedScaledEmbedding, ScaledEmbedding
from .errors import WeightsError

BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)


def in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.weight.shape[1]
    if isinstance(module, ScaledEmbedding):
        return module.table_dim
    raise TypeError(f"{type(module).__name__} is not quantizable")


def quantizable_modules(model: nn.Module, skip: Callable[[str], bool] | None = None) -> dict[str, nn.Module]:
    """path -> module for every Linear and embedding table (the conditioners stay float,
    like the reference keeps them float32)."""
    out = {}
    for path, m in model.named_modules():
        if not isinstance(m, (nn.Linear, ScaledEmbedding)) or isinstance(m, nn.QuantizedLinear):
            continue
        if path.startswith("condition_provider") or (skip is not None and skip(path)):
            continue
        out[path] = m
    return out


def detect_bits_group(name: str, in_dim: int, weight_shape, scales_shape) -> tuple[int, int]:
    """(bits, group size) of a quantized tensor pair, or a WeightsError saying why not."""
    if len(weight_shape) != 2 or len(scales_shape) != 2 or weight_shape[0] != scales_shape[0]:
        raise WeightsError(f"{name}: quantized weight {tuple(weight_shape)} and scales {tuple(scales_shape)} do not pair up")
    packed, groups = weight_shape[1], scales_shape[1]
    if groups == 0 or in_dim % groups or (packed * 32) % in_dim:
        raise WeightsError(f"{name}: packed weight {tuple(weight_shape)} / scales {tuple(scales_shape)} "
                           f"do not fit an input width of {in_dim}")
    bits, group = packed * 32 // in_dim, in_dim // groups
    if bits not in BITS or group not in GROUP_SIZES:
        raise WeightsError(f"{name}: {bits}-bit with group size {group} (from the shapes) is not a supported quantization")
    return bits, group


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent: object = model
    parts = path.split(".")
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if isinstance(parent, list):
        parent[int(last)] = new
    else:
        parent[last] = new


def quantized_twin(module: nn.Module, bits: int, group: int) -> nn.Module:
    """An empty quantized module with `module`'s shapes (values come from a checkpoint)."""
    if isinstance(module, nn.Linear):
        out_dim, in_dim = module.weight.shape
        q = nn.QuantizedLinear(in_dim, out_dim, bias="bias" in module, group_size=group, bits=bits)
        return q
    if isinstance(module, ScaledEmbedding):
        q = QuantizedScaledEmbedding(module.num_embeddings, module.dim, group_size=group, bits=bits,
                                     low_rank=module.table_dim if module.has_low_rank else None, demux=module.demux)
        for name in ("low_rank", "out1", "out2"):
            if name in module:
                q[name] = module[name]
        return q
    raise TypeError(f"{type(module).__name__} is not quantizable")


def apply_quantization(model: nn.Module, spec: dict[str, tuple[int, int]]) -> None:
    """Replace each module at `path` by an (empty) quantized twin with (bits, group)."""
    mods = dict(model.named_modules())
    # children first, so an embedding's twin picks up its already-swapped low_rank/out1/out2
    for path in sorted(spec, key=lambda p: -p.count(".")):
        bits, group = spec[path]
        set_module(model, path, quantized_twin(mods[path], bits, group))


def quantize_model(model: nn.Module, bits: int, group_size: int,
                   predicate: Callable[[str, nn.Module], bool] | None = None) -> dict[str, tuple[int, int]]:
    """Quantize float weights in place (for conversion); returns the applied spec."""
    spec = {}
    for path, m in sorted(quantizable_modules(model).items(), key=lambda kv: -kv[0].count(".")):
        if predicate is not None and not predicate(path, m):
            continue
        if in_features(m) % group_size:
            continue
        q = m.to_quantized(group_size=group_size, bits=bits) if isinstance(m, ScaledEmbedding) \
            else nn.QuantizedLinear.from_linear(m, group_size, bits)
        set_module(model, path, q)
        spec[path] = (bits, group_size)
    mx.eval(model.parameters())
    return spec
