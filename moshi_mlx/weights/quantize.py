"""Affine quantization of the LM: which modules can be quantized, reading bits and group size
back from a file's tensor shapes, and swapping modules for their quantized twins.

Bits and group size are never guessed from file names: a quantized `path` stores
`path.weight` uint32 [out, in * bits / 32] and `path.scales` [out, in / group], so with the
input width `in` known from the config both follow exactly. Embeddings become
`QuantizedScaledEmbedding`, which keeps the token -1 -> zero vector rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from ..modules.embedding import ScaledEmbedding
from .errors import WeightsError

BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_BITS = 4  # affine bits when none are given (make_spec, the mixed recipe, moshi-convert's -q alone)
# mode -> (bits, group sizes) for MLX's floating-point (micro-scaling) formats: no biases,
# uint8 scales; they only exist in newer MLX versions (see `available_modes`)
FP_MODES = {"mxfp4": ((4,), (32,)), "mxfp8": ((8,), (32,)), "nvfp4": ((4,), (16,))}


@lru_cache(maxsize=None)
def available_modes() -> tuple[str, ...]:
    """Quantization modes the installed MLX supports ("affine" always)."""
    modes = ["affine"]
    for mode, (bits, groups) in FP_MODES.items():
        try:
            mx.eval(mx.quantize(mx.zeros((1, groups[0] * 2)), groups[0], bits[0], mode=mode))
            modes.append(mode)
        except (ValueError, TypeError, RuntimeError):
            pass
    return tuple(modes)


def default_group_size(bits: int, mode: str = "affine") -> int:
    """Group size when none is given: the published Moshi files use 32 at 4 bits and below,
    64 above (q4/g32, q8/g64); the fp formats have a single group size."""
    if mode in FP_MODES:
        return FP_MODES[mode][1][0]
    return 32 if bits <= 4 else 64


@dataclass(frozen=True)
class QuantSpec:
    """How one module is quantized. Build with `make_spec` (fills defaults, validates)."""

    bits: int
    group_size: int
    mode: str = "affine"

    def describe(self) -> str:
        return f"{self.bits}-bit {self.mode} g{self.group_size}"

    def to_json(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "mode": self.mode}

    @classmethod
    def from_json(cls, d: dict, where: str = "quantization") -> "QuantSpec":
        if not isinstance(d, dict) or "bits" not in d or "group_size" not in d:
            raise WeightsError(f"{where}: expected {{'bits': ..., 'group_size': ...}}, got {d!r}")
        return make_spec(d["bits"], d["group_size"], d.get("mode", "affine"), where=where)


def make_spec(
    bits: int | None = None, group_size: int | None = None, mode: str = "affine", where: str = "quantization"
) -> QuantSpec:
    """A validated QuantSpec; None picks the default bits (4, or the mode's) / group size."""
    if mode not in ("affine",) + tuple(FP_MODES):
        raise WeightsError(f"{where}: unknown quantization mode {mode!r}; known: affine, {', '.join(FP_MODES)}")
    if mode not in available_modes():
        raise WeightsError(
            f"{where}: the installed MLX does not support mode {mode!r} (it offers {', '.join(available_modes())})"
        )
    allowed_bits, allowed_groups = FP_MODES.get(mode, (BITS, GROUP_SIZES))
    if bits is None:
        bits = DEFAULT_BITS if mode == "affine" else allowed_bits[0]
    if not isinstance(bits, int) or bits not in allowed_bits:
        raise WeightsError(
            f"{where}: {bits}-bit {mode} quantization is not supported (bits: {', '.join(map(str, allowed_bits))})"
        )
    if group_size is None:
        group_size = default_group_size(bits, mode)
    if not isinstance(group_size, int) or group_size not in allowed_groups:
        raise WeightsError(
            f"{where}: group size {group_size} is not supported for {mode} quantization "
            f"(group sizes: {', '.join(map(str, allowed_groups))})"
        )
    return QuantSpec(bits, group_size, mode)


def as_spec(value) -> QuantSpec:
    """A QuantSpec from a QuantSpec or a legacy (bits, group) tuple."""
    if isinstance(value, QuantSpec):
        return value
    bits, group = value
    return QuantSpec(int(bits), int(group))


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
        raise WeightsError(
            f"{name}: quantized weight {tuple(weight_shape)} and scales {tuple(scales_shape)} do not pair up"
        )
    packed, groups = weight_shape[1], scales_shape[1]
    if groups == 0 or in_dim % groups or (packed * 32) % in_dim:
        raise WeightsError(
            f"{name}: packed weight {tuple(weight_shape)} / scales {tuple(scales_shape)} "
            f"do not fit an input width of {in_dim}"
        )
    bits, group = packed * 32 // in_dim, in_dim // groups
    if bits not in BITS or group not in GROUP_SIZES:
        raise WeightsError(
            f"{name}: {bits}-bit with group size {group} (from the shapes) is not a supported quantization"
        )
    return bits, group


def detect_spec(name: str, in_dim: int, weight_shape, scales_shape, has_biases: bool = True) -> QuantSpec:
    """The QuantSpec of a stored module: bits and group size from the shapes (as
    `detect_bits_group`), the mode from the biases (affine has them, the fp formats not)."""
    if has_biases:
        return QuantSpec(*detect_bits_group(name, in_dim, weight_shape, scales_shape))
    if (
        len(weight_shape) != 2
        or len(scales_shape) != 2
        or weight_shape[0] != scales_shape[0]
        or scales_shape[1] == 0
        or in_dim % scales_shape[1]
        or (weight_shape[1] * 32) % in_dim
    ):
        raise WeightsError(
            f"{name}: packed weight {tuple(weight_shape)} / scales {tuple(scales_shape)} "
            f"do not fit an input width of {in_dim}"
        )
    bits, group = weight_shape[1] * 32 // in_dim, in_dim // scales_shape[1]
    for mode, (mb, mg) in FP_MODES.items():
        if bits in mb and group in mg:
            return QuantSpec(bits, group, mode)
    raise WeightsError(
        f"{name}: {bits}-bit with group size {group} and no biases (from the shapes) is not a supported quantization"
    )


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


def quantized_twin(module: nn.Module, bits: int, group: int, mode: str = "affine") -> nn.Module:
    """An empty quantized module with `module`'s shapes (values come from a checkpoint)."""
    if isinstance(module, nn.Linear):
        out_dim, in_dim = module.weight.shape
        if mode == "affine":
            return nn.QuantizedLinear(in_dim, out_dim, bias="bias" in module, group_size=group, bits=bits)
        return nn.QuantizedLinear(in_dim, out_dim, bias="bias" in module, group_size=group, bits=bits, mode=mode)
    if isinstance(module, ScaledEmbedding):
        return module.quantized_twin(group, bits, mode)
    raise TypeError(f"{type(module).__name__} is not quantizable")


def apply_quantization(model: nn.Module, spec: dict[str, "QuantSpec | tuple[int, int]"]) -> None:
    """Replace each module at `path` by an (empty) quantized twin with its QuantSpec (or
    legacy (bits, group) tuple)."""
    mods = dict(model.named_modules())
    # children first, so an embedding's twin picks up its already-swapped low_rank/out1/out2
    for path in sorted(spec, key=lambda p: -p.count(".")):
        q = as_spec(spec[path])
        set_module(model, path, quantized_twin(mods[path], q.bits, q.group_size, q.mode))


def share_arrays(module: nn.Module) -> nn.Module:
    """A new module of `module`'s class holding the very same arrays (and child modules),
    with a copy of its attributes: what a slice gets for a module another slice holds."""
    new = type(module).__new__(type(module))
    new.__dict__.update({k: (set(v) if isinstance(v, set) else v) for k, v in module.__dict__.items()})
    for k, v in module.items():
        new[k] = v
    return new


def _same_arrays(a: nn.Module, b: nn.Module) -> bool:
    return type(a) is type(b) and a.keys() == b.keys() and all(a[k] is b[k] for k in a)


def quantize_model(
    model: nn.Module, bits: int, group_size: int, predicate: Callable[[str, nn.Module], bool] | None = None
) -> dict[str, tuple[int, int]]:
    """Quantize float weights in place (for conversion); returns the applied spec.
    Modules holding the same arrays (depformer slices that share weights) are quantized
    once and share the packed arrays."""
    spec = {}
    todo = [
        (p, m)
        for p, m in sorted(quantizable_modules(model).items(), key=lambda kv: -kv[0].count("."))
        if (predicate is None or predicate(p, m)) and in_features(m) % group_size == 0
    ]
    users: dict[int, int] = {}
    for _, m in todo:
        users[id(m.weight)] = users.get(id(m.weight), 0) + 1
    done: dict[int, tuple[nn.Module, nn.Module]] = {}  # id(float weight) -> (float module, quantized)
    for path, m in todo:
        key = id(m.weight)
        hit = done.get(key)
        if hit is not None and _same_arrays(m, hit[0]):
            q = share_arrays(hit[1])
        else:
            q = (
                m.to_quantized(group_size=group_size, bits=bits)
                if isinstance(m, ScaledEmbedding)
                else nn.QuantizedLinear.from_linear(m, group_size, bits)
            )
        users[key] -= 1
        if users[key]:
            done[key] = (m, q)  # kept (float weight included) only while a module sharing it is to come
        else:
            done.pop(key, None)
        set_module(model, path, q)
        spec[path] = (bits, group_size)
    mx.eval(model.parameters())
    return spec
