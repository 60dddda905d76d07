"""Benchmark checkpoints: seeded random weights with the published shapes, one model folder
per (shape, temporal layers, format), written once and cached.

Both implementations read the same file: our MLX layout is upstream's, so a folder made by
`moshi_mlx.convert` loads in upstream's `moshi_mlx` too (upstream derives nothing from
config.json; its bench script builds its config from the same dict).

Shapes keep every real width (model dim, heads, feed-forward, vocabularies, the full
depformer); only the number of temporal layers is reduced where time or memory demand it,
and the suite extrapolates per layer to the real count.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from moshi_mlx.models.config import LmConfig, preset

DEFAULT_CACHE = Path(os.environ.get("MOSHI_BENCH_CACHE", "/tmp/moshi-bench-weights"))

# shape name -> (preset it copies, what it is)
SHAPES = {
    "7b": ("moshiko", "Moshi 7B (dim 4096, 32 layers, 8-step depformer)"),
    "2b": ("hibiki-2b", "2B multistream (dim 2560, 24 layers, 16-step depformer; conditioner dropped)"),
    "1b": ("moshi-1b", "Moshi 1B (dim 2048, 16 layers, 8-step depformer)"),
    "3b-zero": ("hibiki-zero-3b", "Hibiki-Zero 3B (dim 2048, 28 layers, GQA, 16-step depformer with norms)"),
}


NARROW_HEAD_DIM = 16  # the narrow model's head width: width // 16 heads (step_overhead checks --width by it)


def narrow_shape(width: int) -> str:
    """Register shape `7b-w<width>`: Moshi 7B's structure (32 layers, 8 x 6 depformer, 32k
    text head, 2048-card audio) at a small width, where a step costs only its per-operation
    overhead. Quantized formats need width % 128 == 0 (the MLP's hidden width is
    11/4 x width and MLX's smallest group is 32); 128 is the narrowest that quantizes."""
    name = f"7b-w{width}"
    if name not in SHAPES:
        heads = max(1, width // NARROW_HEAD_DIM)
        SHAPES[name] = ("moshiko", f"Moshi 7B's structure at width {width}")
        WIDTHS[name] = {
            "dim": width,
            "num_heads": heads,
            "depformer_dim": width,
            "depformer_num_heads": heads,
            "depformer_dim_feedforward": int(4.125 * width),
        }
        GROUP_SIZES[name] = 32
    return name


# widths replaced in a shape (every other field is the preset's)
WIDTHS: dict[str, dict] = {}
# quantization group size where the default (64 for 8 bits) would not divide a width
GROUP_SIZES: dict[str, int] = {}

# format name -> convert() arguments (recipe name, bits); None recipe = float bf16
FORMATS = {
    "bf16": (None, None),
    "q8": ("uniform", 8),
    "q4": ("uniform", 4),
    "mixed-4-8": ("mixed-4-8", None),
}


@dataclass(frozen=True)
class Case:
    shape: str
    layers: int
    fmt: str

    @property
    def key(self) -> str:
        return f"{self.shape}-L{self.layers}"

    @property
    def full_layers(self) -> int:
        return preset(SHAPES[self.shape][0]).num_layers


def shaped_config(shape: str, layers: int) -> LmConfig:
    """The published config of `shape` with `layers` temporal layers and no conditioners
    (so both implementations run the same unconditioned network)."""
    if shape not in SHAPES and shape.startswith("7b-w") and shape[4:].isdigit():
        narrow_shape(int(shape[4:]))
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    d = preset(SHAPES[shape][0]).to_dict()
    d.update(WIDTHS.get(shape, {}))
    d["num_layers"] = int(layers)
    d.pop("conditioners", None)
    d.pop("fuser", None)
    d["model_type"] = "moshi"
    d["_source"] = f"bench: {SHAPES[shape][1]} with {layers} temporal layer(s), random weights"
    return LmConfig.from_dict(d)


def quant_params(shape: str, fmt: str) -> tuple[int, int] | None:
    """(bits, group size) of a uniform format for in-process random models, None for bf16
    (q8: 8 bits in groups of 64, q4: 4 bits in groups of 32, unless the shape needs smaller)."""
    recipe, bits = FORMATS[fmt]
    if recipe is None:
        return None
    if recipe != "uniform":
        raise ValueError(f"in-process random models take bf16 or a uniform format, not {fmt!r}")
    from moshi_mlx.weights.quantize import default_group_size

    return bits, GROUP_SIZES.get(shape, default_group_size(bits))


def upstream_config_dict(cfg: LmConfig) -> dict:
    """The config.json-style dict upstream's `LmConfig.from_config_dict` reads."""
    d = cfg.to_dict()
    d.setdefault("cross_attention", False)
    return d


def prepare(case: Case, cache_dir: Path = DEFAULT_CACHE, seed: int = 0, log=print) -> Path:
    """The model folder for `case`, made if missing: a bf16 PyTorch-layout random
    checkpoint (kept per shape/layers), converted to the MLX layout in `case.fmt`."""
    from moshi_mlx.weights.convert import SourceInfo, convert
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint
    from moshi_mlx.weights.recipes import make_recipe

    base = Path(cache_dir) / f"{case.key}-seed{seed}"
    out = base / case.fmt
    done = out / ".complete"
    if done.exists():
        return out
    cfg = shaped_config(case.shape, case.layers)
    src_dir = base / "src"
    src = src_dir / "model.safetensors"
    if not (src_dir / ".complete").exists():
        log(f"[weights] writing random {case.key} checkpoint to {src_dir}")
        shutil.rmtree(src_dir, ignore_errors=True)
        write_random_checkpoint(cfg, src_dir, seed=seed, head_scale=4.0, dtype="bfloat16")
        (src_dir / ".complete").write_text("ok\n")
    recipe_name, bits = FORMATS[case.fmt]
    recipe = make_recipe(recipe_name, bits, GROUP_SIZES.get(case.shape)) if recipe_name else None
    log(f"[weights] converting {case.key} to {case.fmt}")
    shutil.rmtree(out, ignore_errors=True)
    convert(SourceInfo(src, cfg, "bench"), out, recipe=recipe, force=True, copy_assets=False)
    (out / "bench_config.json").write_text(json.dumps(upstream_config_dict(cfg), indent=1) + "\n")
    done.write_text("ok\n")
    return out


def weights_file(folder: Path) -> Path:
    names = [p for p in Path(folder).glob("*.safetensors")]
    if len(names) != 1:
        raise FileNotFoundError(f"{folder}: expected one .safetensors file, found {len(names)}")
    return names[0]
