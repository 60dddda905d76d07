"""A model folder as a user's own copy holds it (config.json and model.safetensors, MLX
layout), with random weights of a preset: shared by the tests that run tools on folders."""

import json
from pathlib import Path

import mlx.core as mx

from moshi_mlx.models import LmConfig, lm_preset, random_lm
from moshi_mlx.weights.lm_loader import save_lm


def random_model_folder(folder: Path, preset_name: str, *, seed: int = 2, dtype=mx.bfloat16) -> Path:
    d = lm_preset(preset_name).to_dict()
    d.pop("_source", None)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(d))
    save_lm(random_lm(LmConfig.from_dict(d), seed=seed, dtype=dtype), folder / "model.safetensors")
    return folder
