"""Seeded random weights for the real architecture at any size.

Drawn with numpy's `default_rng(seed)` (bit-identical on every platform) in the PyTorch
checkpoint layout, tensor by tensor in sorted name order, so the reference package can be
given exactly the same model (parity fixtures) and shared depformer weights stay shared.
Scales keep activations and logits in a realistic range: linear layers 1/sqrt(fan-in),
norms around 1, embeddings unit variance.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..models.config import LmConfig
from .lm_keys import pytorch_layout


def _scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) for the tensor `name`."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "alpha" or (leaf == "weight" and ("norm" in name) and len(shape) == 1):
        return 1.0, 0.1
    if leaf == "bias":
        return 0.0, 0.1
    if leaf == "scale":
        return 0.5, 0.05
    if leaf == "learnt_padding":
        return 0.0, 0.2
    if (
        "emb" in name.split(".")[0]
        or name.endswith("embed.weight")
        or (".emb" in name and "low_rank" not in name and "out1" not in name and "out2" not in name)
    ):
        return 0.0, 1.0
    return 0.0, float(shape[-1]) ** -0.5


def random_state(cfg: LmConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch-layout (released names) float32 weights for `cfg`."""
    from ..validation import seed as check_seed

    rng = np.random.default_rng(check_seed("seed", seed))
    out = {}
    for name, shape in sorted(pytorch_layout(cfg).items()):
        mean, std = _scale(name, shape)
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std)
        if mean:
            a += np.float32(mean)
        out[name] = a
    return out


def random_lm(cfg: LmConfig | str, seed: int = 0, dtype: mx.Dtype = mx.float32):
    """Build a model without downloading anything: the real architecture, seeded random weights.

    Args:
        cfg: An LmConfig or a preset name.
        seed: Seed of the random weights (same seed, same weights).
        dtype: Float dtype of the weights.

    Returns:
        The `Lm` of `cfg` with seeded random weights.
    """
    from .lm_loader import as_lm_config, load_lm_state

    cfg = as_lm_config(cfg)
    return load_lm_state(random_state(cfg, seed), cfg, dtype=dtype, consume=True)


def random_lora(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded float32 LoRA adapters for the given names and shapes (a fine-tune's layout):
    `lora_A` [rank, in] with std 1/sqrt(in), `lora_B` [out, rank] with std 0.5/sqrt(rank), so
    scaling x B @ A is of the base weights' size; any other tensor (a fully trained one)
    as `random_state` draws it. In sorted name order, like `random_state`."""
    from ..validation import seed as check_seed

    rng = np.random.default_rng(check_seed("seed", seed))
    out = {}
    for name, shape in sorted(shapes.items()):
        shape = tuple(shape)
        a = rng.standard_normal(shape, dtype=np.float32)
        if name.endswith(".lora_A.weight"):
            a *= np.float32(shape[1] ** -0.5)
        elif name.endswith(".lora_B.weight"):
            a *= np.float32(0.5 * shape[1] ** -0.5)
        else:
            mean, std = _scale(name, shape)
            a *= np.float32(std)
            if mean:
                a += np.float32(mean)
        out[name] = a
    return out
