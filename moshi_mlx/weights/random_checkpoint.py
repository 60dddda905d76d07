"""Write a seeded random LM checkpoint to disk one tensor at a time (PyTorch layout), so a
real-width 7B-shaped file can be made for conversion and memory tests without holding it.

Values are exactly those of `random_state(cfg, seed)` (same generator, same order), cast
to the file dtype. `head_scale` multiplies the output heads (`text_linear`, `linears.K`):
random weights give nearly flat next-token distributions (logits of std ~1 over 32000 or
2048 tokens), where KL is tiny and top-1 agreement a coin toss whatever the quantization;
scaled heads give peaked ones, like a trained model's, so a quality report says something.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import numpy as np

from ..constants import CONFIG_NAME, LM_NAME
from ..models.config import LmConfig
from .lm_keys import pytorch_layout
from .random_state import _scale
from .safetensors_io import SafetensorsWriter

_ST = {"bfloat16": ("BF16", mx.bfloat16), "float16": ("F16", mx.float16), "float32": ("F32", mx.float32)}


def is_head(name: str) -> bool:
    return name == "text_linear.weight" or (name.startswith("linears.") and name.endswith(".weight"))


def iter_random_state(cfg: LmConfig, seed: int = 0, head_scale: float = 1.0) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) in sorted name order: `random_state(cfg, seed)`, streamed."""
    rng = np.random.default_rng(seed)
    for name, shape in sorted(pytorch_layout(cfg).items()):
        mean, std = _scale(name, shape)
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std * (head_scale if is_head(name) else 1.0))
        if mean:
            a += np.float32(mean)
        yield name, a


def write_random_checkpoint(
    cfg: LmConfig,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    head_scale: float = 1.0,
    dtype: str = "bfloat16",
    name: str = LM_NAME,
) -> Path:
    """Write `out_dir/name` (PyTorch layout) and `out_dir/config.json`; returns the weights path."""
    st, mx_dtype = _ST[dtype]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = {n: (st, tuple(s)) for n, s in sorted(pytorch_layout(cfg).items())}
    path = out / name
    with SafetensorsWriter(path, layout, {"format": "pt", "random_seed": seed, "head_scale": head_scale}) as w:
        for n, a in iter_random_state(cfg, seed, head_scale):
            arr = mx.array(a).astype(mx_dtype)
            del a
            w.write(n, arr)
            del arr
    d = cfg.to_dict()
    d["moshi_name"] = name
    d["_source"] = f"random weights (seed {seed}, output heads x{head_scale}) for {cfg.source or 'a custom config'}"
    (out / CONFIG_NAME).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    return path
